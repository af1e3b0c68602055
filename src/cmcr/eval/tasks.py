"""Evaluation tasks: a dataset, an embedder and a named protocol in, metric rows out.

Every choice is fixed and documented in docs/eval.md: the frame and audio crop are the spaces'
own deterministic rules, prompt templates come from :mod:`cmcr.eval.prompts` by protocol,
captions are handled the customary way, heat-map tasks live in :mod:`cmcr.eval.localization`.
Nothing here is random.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cmcr.errors import ConfigError
from cmcr.eval import metrics
from cmcr.eval.datasets.base import EvalDataset, check_unique_class_names
from cmcr.eval.localization import (
    heatmaps,
    localization,
    slavc_counterfactual,
    square_image,
)
from cmcr.eval.prompts import class_prompts, template_set
from cmcr.eval.protocols import Protocol, resolve_protocol
from cmcr.eval.results import Embedder, TaskResult, embed_items, require_items

__all__ = ["TASKS", "Embedder", "TaskResult", "heatmaps", "run_task", "square_image"]


# -- audio <-> image retrieval ---------------------------------------------------------------------
def audio_image_retrieval(dataset: EvalDataset, embedder: Embedder, protocol: Protocol) -> TaskResult:
    """Each item's sound retrieves its image among all images, and the reverse (R@1/5/10, mAP)."""
    require_items(len(dataset), 2, "retrieval")
    audio = embed_items(embedder, "audio", dataset.inputs["audio"], dataset.ids)
    image = embed_items(embedder, "image", dataset.inputs["image"], dataset.ids)
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


def text_retrieval(dataset: EvalDataset, embedder: Embedder, protocol: Protocol) -> TaskResult:
    """text -> item: every caption a query, its item the positive; item -> text: an item's
    positives are all its captions (R@k is a hit rate: at least one in the top k)."""
    modality = captioned_modality(dataset)
    require_items(len(dataset), 2, "text retrieval")
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
def zero_shot(dataset: EvalDataset, embedder: Embedder, protocol: Protocol) -> TaskResult:
    """Each item's class is the prompt-ensembled class text closest to it (top-1 / top-5)."""
    if dataset.labels is None or not dataset.class_names:
        raise ConfigError(f"dataset '{dataset.name}' has no labels for zero-shot classification")
    check_unique_class_names(dataset.class_names, f"dataset '{dataset.name}'")
    modality = next(m for m in dataset.inputs)
    items = embed_items(embedder, modality, dataset.inputs[modality], dataset.ids)
    templates = template_set(protocol.templates or "default")
    prompts = class_prompts(dataset.class_names, templates)
    prompt_rows = embedder.embed("text", prompts, [f"prompt#{i}" for i in range(len(prompts))])
    prototypes = metrics.class_prototypes(prompt_rows, len(dataset.class_names))
    classes = len(dataset.class_names)
    rows = {f"{modality} zero-shot": metrics.topk_accuracy(items @ prototypes.T, dataset.labels),
            "chance": {"top1": 100.0 / classes, "top5": 100.0 * min(5, classes) / classes}}
    return TaskResult("zero-shot", dataset.name, len(dataset), rows,
                      figure={"templates": list(templates)})


# -- counterfactual recognition -------------------------------------------------------------------------
def counterfactual(dataset: EvalDataset, embedder: Embedder, protocol: Protocol) -> TaskResult:
    """Does this sound belong to this image? ``slavc``: found only where it is also localised
    (SLAVC's AP, max-F1, precision); ``global``: the pair's cosine, AP and max-F1 over every
    threshold and accuracy with a threshold cross-fitted on fixed folds."""
    if dataset.matched is None:
        raise ConfigError(f"dataset '{dataset.name}' has no matched/unmatched pairs")
    metrics.require_both_classes(dataset.matched, "counterfactual recognition")
    if protocol.recognition == "slavc":
        rows = slavc_counterfactual(dataset, embedder)
    else:
        rows = global_counterfactual(dataset, embedder)
    sounding = int(np.sum(dataset.matched))
    return TaskResult("counterfactual", dataset.name, len(dataset), rows,
                      notes=[f"{sounding} sounding and {len(dataset) - sounding} non-sounding pairs"])


def global_counterfactual(dataset: EvalDataset, embedder: Embedder) -> dict[str, dict[str, float]]:
    """The ``global`` rows: the pairs' cosine scores, and what a random score would get."""
    audio = embedder.embed("audio", dataset.inputs["audio"], [f"{i}:audio" for i in dataset.ids])
    image = embedder.embed("image", dataset.inputs["image"], [f"{i}:image" for i in dataset.ids])
    scores = np.sum(audio * image, axis=1)
    positive_rate = 100.0 * float(np.mean(dataset.matched or []))
    return {"audio·image": metrics.recognition_metrics(scores, dataset.matched or []),
            "chance": {"AP": positive_rate, "max-F1": 200 * positive_rate / (100 + positive_rate),
                       "accuracy": max(positive_rate, 100 - positive_rate)}}


TASKS: dict[str, Callable[[EvalDataset, Embedder, Protocol], TaskResult]] = {
    "retrieval": audio_image_retrieval,
    "localization": localization,
    "counterfactual": counterfactual,
    "zero-shot": zero_shot,
    "text-retrieval": text_retrieval,
}


def run_task(task: str, dataset: EvalDataset, embedder: Embedder) -> TaskResult:
    """Run ``task`` on ``dataset`` under the protocol it was read with; an error names the tasks
    the dataset supports. The result carries the protocol and every note on left-out items."""
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; known: {', '.join(TASKS)}")
    if task not in dataset.tasks:
        raise ConfigError(f"dataset '{dataset.name}' supports {', '.join(dataset.tasks)}, not '{task}'")
    protocol = resolve_protocol(dataset.name, dataset.protocol)
    result = TASKS[task](dataset, embedder, protocol)
    result.protocol = protocol.name
    result.notes = [*dataset.notes, *result.notes]
    return result
