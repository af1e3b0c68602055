"""Heat-map tasks: sound-source localisation and localisation-aware counterfactual recognition.

A heat map is the cosine between the projected audio embedding and each projected CLIP patch
token of the whole image resized to a square, upsampled to 224 x 224 the way the protocol's
reference code does (docs/eval.md).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.errors import ConfigError
from cmcr.eval import metrics
from cmcr.eval.datasets.base import EvalDataset
from cmcr.eval.protocols import Protocol
from cmcr.eval.results import Embedder, TaskResult

HEATMAP_SIZE = 224  # heat maps and ground-truth maps are compared on a 224 x 224 grid
FIGURE_ITEMS = 8  # heat maps kept for the figure
# rule -> (mode, align_corners) of the upsampling its reference code uses
UPSAMPLING = {"ezvsl": ("bilinear", True),  # EZ-VSL test.py F.interpolate
              "dsol": ("bilinear", False),  # DSOL tools.py cv2.resize (half-pixel centres)
              "slavc": ("bicubic", True)}  # SLAVC test.py F.interpolate


def square_image(path: Any, size: int = HEATMAP_SIZE) -> Any:
    """The whole image resized to a square (no crop), so patches cover what the boxes cover."""
    from PIL import Image

    from cmcr.data.processing import load_image

    return load_image(path).resize((size, size), Image.BICUBIC)


def heatmaps(patches: np.ndarray, audio: np.ndarray, size: int = HEATMAP_SIZE, *,
             mode: str = "bilinear", align_corners: bool = True) -> np.ndarray:
    """(n, P, d) patch rows and (n, d) audio rows -> (n, size, size) cosine heat maps.

    The P = g*g patch similarities are upsampled with ``mode`` (EZ-VSL: bilinear,
    ``align_corners=True``).
    """
    similarity = np.einsum("npd,nd->np", patches, audio)
    grid = int(round(np.sqrt(similarity.shape[1])))
    if grid * grid != similarity.shape[1]:
        raise ConfigError(f"{similarity.shape[1]} patch tokens do not form a square grid")
    maps = torch.from_numpy(similarity.reshape(-1, 1, grid, grid).astype(np.float32))
    return F.interpolate(maps, size=(size, size), mode=mode, align_corners=align_corners)[:, 0].numpy()


def dataset_heatmaps(dataset: EvalDataset, embedder: Embedder, rule: str) -> tuple[np.ndarray, list]:
    """(n, 224, 224) cosine maps of each item's sound over its image, and the square images."""
    audio = embedder.embed("audio", dataset.inputs["audio"], dataset.ids)
    images = [square_image(path) for path in dataset.inputs["image"]]
    patches = embedder.embed_patches(images, [f"{i}@square{HEATMAP_SIZE}" for i in dataset.ids])
    mode, align_corners = UPSAMPLING[rule]
    return heatmaps(patches, audio, mode=mode, align_corners=align_corners), images


def item_ciou(heat: np.ndarray, boxes: Sequence, consensus: int, rule: str) -> float:
    """One map's cIoU under the protocol's rule (EZ-VSL: median cut; DSOL: 0.1 x max)."""
    gt_map = metrics.boxes_to_map(boxes, (HEATMAP_SIZE, HEATMAP_SIZE), consensus)
    return metrics.dsol_ciou(heat, gt_map) if rule == "dsol" else metrics.consensus_iou(heat, gt_map)


def boxed_items(dataset: EvalDataset) -> tuple[EvalDataset, list[str]]:
    """The items that have boxes, and a note on those skipped (DSOL skips frames without)."""
    if dataset.boxes is None:
        raise ConfigError(f"dataset '{dataset.name}' has no boxes for localisation")
    boxed = [i for i, item in enumerate(dataset.boxes) if item]
    if not boxed:
        raise ConfigError(f"dataset '{dataset.name}': none of its {len(dataset)} items has a box")
    if len(boxed) == len(dataset):
        return dataset, []
    return dataset.take(boxed), [f"localisation skipped {len(dataset) - len(boxed)} item(s) "
                                 "without a box"]


def localization(dataset: EvalDataset, embedder: Embedder, protocol: Protocol) -> TaskResult:
    """cIoU@0.5, mean cIoU and AUC of audio-to-patch heat maps against the boxes, and the same
    for a fixed centre-peaked map (the baseline to beat)."""
    dataset, notes = boxed_items(dataset)
    rule = protocol.localization
    maps, images = dataset_heatmaps(dataset, embedder, rule)
    boxes = dataset.boxes or []
    cious = [item_ciou(heat, item, dataset.box_consensus, rule) for heat, item in zip(maps, boxes)]
    centre = np.fromfunction(lambda y, x: -((y - 111.5) ** 2 + (x - 111.5) ** 2),
                             (HEATMAP_SIZE, HEATMAP_SIZE))
    centre_cious = [item_ciou(centre, item, dataset.box_consensus, rule) for item in boxes]
    rows = {"audio->patches": metrics.localization_metrics(cious),
            "centre prior": metrics.localization_metrics(centre_cious)}
    shown = slice(0, FIGURE_ITEMS)
    figure = {"images": images[shown], "heatmaps": maps[shown], "boxes": boxes[shown],
              "ids": dataset.ids[shown], "cious": cious[shown]}
    return TaskResult("localization", dataset.name, len(dataset), rows, figure, notes=notes)


def slavc_counterfactual(dataset: EvalDataset, embedder: Embedder) -> dict[str, dict[str, float]]:
    """SLAVC's extended-set metrics: each pair's score map (cos + 1) / 2, its confidence (mean of
    the top quarter), its cIoU (map >= 0.5 against the sounding frame's boxes); AP, max-F1 and
    precision over SLAVC's thresholds."""
    if dataset.boxes is None:
        raise ConfigError(f"dataset '{dataset.name}' has no boxes; the slavc protocol needs them "
                          "(or use --protocol global)")
    maps, _ = dataset_heatmaps(dataset, embedder, "slavc")
    scores = [metrics.slavc_scores(heat) for heat in maps]
    confidences = [metrics.slavc_confidence(score) for score in scores]
    cious = [metrics.mask_ciou(score >= 0.5, metrics.boxes_to_map(
                 boxes, (HEATMAP_SIZE, HEATMAP_SIZE), dataset.box_consensus)) if boxes else 0.0
             for score, boxes in zip(scores, dataset.boxes)]
    return {"audio·patches": metrics.slavc_recognition_metrics(dataset.matched or [], cious, confidences)}
