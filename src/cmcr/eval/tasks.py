"""Evaluation protocols: a dataset and an embedder in, metric rows out (docs/eval.md says why).

Every choice is fixed: the frame and audio crop are the spaces' own deterministic rules, prompt
templates come from :mod:`cmcr.eval.prompts`, captions are handled the customary way, and the
counterfactual threshold is cross-fitted on fixed folds. Nothing here is random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.errors import ConfigError
from cmcr.eval import metrics
from cmcr.eval.datasets.base import EvalDataset
from cmcr.eval.prompts import class_prompts, templates_for

HEATMAP_SIZE = 224  # heat maps and ground-truth maps are compared on a 224 x 224 grid (EZ-VSL)
FIGURE_ITEMS = 8  # heat maps kept for the figure


class Embedder(Protocol):
    def embed(self, modality: str, inputs: Sequence[Any], ids: Sequence[str]) -> np.ndarray: ...

    def embed_patches(self, images: Sequence[Any], ids: Sequence[str]) -> np.ndarray: ...


@dataclass
class TaskResult:
    """Metric rows (row name -> metric -> value, in percent) and what a figure needs."""

    task: str
    dataset: str
    count: int
    rows: dict[str, dict[str, float]]
    figure: dict[str, Any] = field(default_factory=dict)


# -- audio <-> image retrieval ---------------------------------------------------------------------
def audio_image_retrieval(dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """Each item's sound retrieves its image among all images, and the reverse (R@1/5/10, mAP)."""
    audio = embedder.embed("audio", dataset.inputs["audio"], dataset.ids)
    image = embedder.embed("image", dataset.inputs["image"], dataset.ids)
    similarity = audio @ image.T
    rows = {"audio->image": metrics.retrieval_metrics(similarity),
            "image->audio": metrics.retrieval_metrics(similarity.T),
            "chance": metrics.chance_retrieval_metrics(len(dataset))}
    return TaskResult("retrieval", dataset.name, len(dataset), rows)


# -- text <-> item retrieval, several captions per item ----------------------------------------------
def captioned_modality(dataset: EvalDataset) -> str:
    if dataset.captions is None or len(dataset.inputs) != 1:
        raise ConfigError(f"dataset '{dataset.name}' has no captions for text retrieval")
    return next(iter(dataset.inputs))


def text_retrieval(dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """text -> item: every caption a query, its item the positive; item -> text: an item's
    positives are all its captions (R@k is a hit rate: at least one in the top k)."""
    modality = captioned_modality(dataset)
    items = embedder.embed(modality, dataset.inputs[modality], dataset.ids)
    texts, item_of_caption, text_ids = [], [], []
    for index, (item_id, captions) in enumerate(zip(dataset.ids, dataset.captions or [])):
        for number, caption in enumerate(captions):
            texts.append(caption)
            item_of_caption.append(index)
            text_ids.append(f"{item_id}#{number}")
    captions = embedder.embed("text", texts, text_ids)
    positives = metrics.caption_positives(item_of_caption, len(dataset))
    similarity = captions @ items.T
    per_item = max(1, round(len(texts) / max(1, len(dataset))))
    rows = {f"text->{modality}": metrics.retrieval_metrics(similarity, positives),
            f"{modality}->text": metrics.retrieval_metrics(similarity.T, positives.T),
            f"chance text->{modality}": metrics.chance_retrieval_metrics(len(dataset)),
            f"chance {modality}->text": metrics.chance_retrieval_metrics(len(texts), per_item)}
    return TaskResult("text-retrieval", dataset.name, len(dataset), rows)


# -- zero-shot classification -------------------------------------------------------------------------
def zero_shot(dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """Each item's class is the prompt-ensembled class text closest to it (top-1 / top-5)."""
    if dataset.labels is None or not dataset.class_names:
        raise ConfigError(f"dataset '{dataset.name}' has no labels for zero-shot classification")
    modality = next(m for m in dataset.inputs)
    items = embedder.embed(modality, dataset.inputs[modality], dataset.ids)
    templates = templates_for(dataset.name)
    prompts = class_prompts(dataset.class_names, templates)
    prompt_rows = embedder.embed("text", prompts, [f"prompt#{i}" for i in range(len(prompts))])
    prototypes = metrics.class_prototypes(prompt_rows, len(dataset.class_names))
    classes = len(dataset.class_names)
    rows = {f"{modality} zero-shot": metrics.topk_accuracy(items @ prototypes.T, dataset.labels),
            "chance": {"top1": 100.0 / classes, "top5": 100.0 * min(5, classes) / classes}}
    return TaskResult("zero-shot", dataset.name, len(dataset), rows,
                      figure={"templates": list(templates)})


# -- sound-source localisation -----------------------------------------------------------------------
def square_image(path: Any, size: int = HEATMAP_SIZE) -> Any:
    """The whole image resized to a square (no crop), so patches cover what the boxes cover."""
    from PIL import Image

    from cmcr.processing import load_image

    return load_image(path).resize((size, size), Image.BICUBIC)


def heatmaps(patches: np.ndarray, audio: np.ndarray, size: int = HEATMAP_SIZE) -> np.ndarray:
    """(n, P, d) patch rows and (n, d) audio rows -> (n, size, size) cosine heat maps.

    The P = g*g patch similarities are upsampled bilinearly (align_corners=True, as EZ-VSL).
    """
    similarity = np.einsum("npd,nd->np", patches, audio)
    grid = int(round(np.sqrt(similarity.shape[1])))
    if grid * grid != similarity.shape[1]:
        raise ConfigError(f"{similarity.shape[1]} patch tokens do not form a square grid")
    maps = torch.from_numpy(similarity.reshape(-1, 1, grid, grid).astype(np.float32))
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=True)[:, 0].numpy()


def localization(dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """cIoU@0.5, mean cIoU and AUC of audio-to-patch heat maps against the boxes (EZ-VSL)."""
    if dataset.boxes is None:
        raise ConfigError(f"dataset '{dataset.name}' has no boxes for localisation")
    audio = embedder.embed("audio", dataset.inputs["audio"], dataset.ids)
    images = [square_image(path) for path in dataset.inputs["image"]]
    patches = embedder.embed_patches(images, [f"{i}@square{HEATMAP_SIZE}" for i in dataset.ids])
    maps = heatmaps(patches, audio)
    size = (HEATMAP_SIZE, HEATMAP_SIZE)
    cious = [metrics.consensus_iou(heat, metrics.boxes_to_map(boxes, size, dataset.box_consensus))
             for heat, boxes in zip(maps, dataset.boxes)]
    centre = np.fromfunction(lambda y, x: -((y - 111.5) ** 2 + (x - 111.5) ** 2), size)
    centre_cious = [metrics.consensus_iou(centre, metrics.boxes_to_map(b, size, dataset.box_consensus))
                    for b in dataset.boxes]
    rows = {"audio->patches": metrics.localization_metrics(cious),
            "centre prior": metrics.localization_metrics(centre_cious)}
    shown = slice(0, FIGURE_ITEMS)
    figure = {"images": images[shown], "heatmaps": maps[shown], "boxes": dataset.boxes[shown],
              "ids": dataset.ids[shown], "cious": cious[shown]}
    return TaskResult("localization", dataset.name, len(dataset), rows, figure)


# -- counterfactual recognition -------------------------------------------------------------------------
def counterfactual(dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """Does this sound belong to this image? Score = cosine of the pair; AP, max-F1 and
    accuracy with a threshold cross-fitted on fixed folds (never chosen on the pairs judged)."""
    if dataset.matched is None:
        raise ConfigError(f"dataset '{dataset.name}' has no matched/unmatched pairs")
    audio = embedder.embed("audio", dataset.inputs["audio"], [f"{i}:audio" for i in dataset.ids])
    image = embedder.embed("image", dataset.inputs["image"], [f"{i}:image" for i in dataset.ids])
    scores = np.sum(audio * image, axis=1)
    positive_rate = 100.0 * float(np.mean(dataset.matched))
    rows = {"audio·image": metrics.recognition_metrics(scores, dataset.matched),
            "chance": {"AP": positive_rate, "max-F1": 200 * positive_rate / (100 + positive_rate),
                       "accuracy": max(positive_rate, 100 - positive_rate)}}
    return TaskResult("counterfactual", dataset.name, len(dataset), rows)


TASKS: dict[str, Callable[[EvalDataset, Embedder], TaskResult]] = {
    "retrieval": audio_image_retrieval,
    "localization": localization,
    "counterfactual": counterfactual,
    "zero-shot": zero_shot,
    "text-retrieval": text_retrieval,
}


def run_task(task: str, dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """Run ``task`` on ``dataset``; an error names the tasks the dataset supports."""
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; known: {', '.join(TASKS)}")
    if task not in dataset.tasks:
        raise ConfigError(f"dataset '{dataset.name}' supports {', '.join(dataset.tasks)}, not '{task}'")
    return TASKS[task](dataset, embedder)
