"""Evaluation metrics as pure functions: retrieval, zero-shot, localisation, recognition.

Each localisation and recognition rule names the public file it re-implements. A metric that is
undefined on the data (one class only, one candidate only) raises :class:`UndefinedMetricError`
rather than printing a number that means nothing.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cmcr.errors import CmcrError


class UndefinedMetricError(CmcrError, ValueError):
    """A metric asked of data on which it has no meaning (e.g. AP with no negatives)."""


def require_both_classes(labels: Sequence[bool], what: str) -> np.ndarray:
    """``labels`` as booleans; an error when they hold one class only (AP, F1 and accuracy of a
    one-class set are 100 for any scores, or undefined)."""
    labels = np.asarray(labels, dtype=bool)
    if labels.size == 0 or labels.all() or not labels.any():
        positives = int(labels.sum())
        raise UndefinedMetricError(f"{what} needs both positives and negatives; got {positives} "
                                   f"positive(s) and {labels.size - positives} negative(s) (with "
                                   "--limit, take more items)")
    return labels


def ranks_of_positives(similarity: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """For each query row, the 0-based rank of each positive among all candidates.

    ``similarity`` is (queries, candidates); ``positives`` a boolean matrix of the same shape.
    Ties are broken pessimistically (a tie with a negative counts against the positive).
    Returns a list-like of arrays, one per query.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if similarity.shape != positives.shape:
        raise ValueError(f"similarity {similarity.shape} and positives {positives.shape} differ")
    ranks = []
    for scores, is_positive in zip(similarity, positives):
        negatives = scores[~is_positive]
        positive_scores = np.sort(scores[is_positive])[::-1]
        # rank = negatives scoring >= the positive + positives ranked above it
        above = (negatives[None, :] >= positive_scores[:, None]).sum(axis=1)
        ranks.append(above + np.arange(len(positive_scores)))
    return np.array(ranks, dtype=object)


def recall_at_k(similarity: np.ndarray, positives: np.ndarray,
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k in percent: share of queries with at least one positive in their top k."""
    ranks = ranks_of_positives(similarity, positives)
    best = np.array([r.min() if len(r) else np.inf for r in ranks])
    return {f"R@{k}": float(100.0 * np.mean(best < k)) for k in ks}


def mean_average_precision(similarity: np.ndarray, positives: np.ndarray) -> float:
    """mAP in percent over queries that have at least one positive."""
    ranks = ranks_of_positives(similarity, positives)
    precisions = []
    for query_ranks in ranks:
        if len(query_ranks) == 0:
            continue
        query_ranks = np.sort(query_ranks)
        precisions.append(np.mean((np.arange(len(query_ranks)) + 1) / (query_ranks + 1)))
    return float(100.0 * np.mean(precisions)) if precisions else float("nan")


def retrieval_metrics(similarity: np.ndarray, positives: np.ndarray | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k and mAP; ``positives`` defaults to the diagonal (query i matches candidate i)."""
    similarity = np.asarray(similarity)
    if positives is None:
        if similarity.shape[0] != similarity.shape[1]:
            raise ValueError("without positives the similarity matrix must be square")
        positives = np.eye(len(similarity), dtype=bool)
    return {**recall_at_k(similarity, positives, ks),
            "mAP": mean_average_precision(similarity, positives)}


def chance_retrieval_metrics(num_candidates: int, positives_per_query: int = 1,
                             ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Expected R@k (hit rate) and mAP of a uniformly random ranking, in percent.

    With p positives among n candidates: R@k = 1 - C(n-p, k) / C(n, k), and
    E[AP] = (H_n + (p - 1) / (n - 1) * (n - H_n)) / n (H_n the n-th harmonic number).
    """
    n, p = num_candidates, positives_per_query
    if not 1 <= p <= n:
        raise ValueError(f"need 1 <= positives_per_query <= num_candidates, got {p} and {n}")
    recalls = {f"R@{k}": 100.0 * (1.0 - math.comb(n - p, k) / math.comb(n, k)) if k <= n
               else 100.0 for k in ks}
    harmonic = sum(1.0 / r for r in range(1, n + 1))
    spread = (p - 1) / (n - 1) * (n - harmonic) if n > 1 else 0.0
    return {**recalls, "mAP": 100.0 * (harmonic + spread) / n}


# -- several captions per item ----------------------------------------------------------------------
def caption_positives(item_of_caption: Sequence[int], num_items: int) -> np.ndarray:
    """(captions, items) boolean matrix: caption j is a positive of its own item only.

    text -> item uses it as is (each caption one query, its item the one positive); item -> text
    uses its transpose (an item's positives are all its captions; R@k is then a hit rate).
    """
    item_of_caption = np.asarray(item_of_caption, dtype=np.int64)
    positives = np.zeros((len(item_of_caption), num_items), dtype=bool)
    positives[np.arange(len(item_of_caption)), item_of_caption] = True
    return positives


# -- zero-shot classification -----------------------------------------------------------------------
def class_prototypes(prompt_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes * templates, d) prompt rows, class-major -> (classes, d) unit rows.

    CLIP's prompt ensembling: the mean of a class's unit prompt embeddings, renormalised.
    """
    prompts = np.asarray(prompt_embeddings, dtype=np.float64)
    if len(prompts) % num_classes:
        raise ValueError(f"{len(prompts)} prompt rows do not split into {num_classes} classes")
    prompts = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
    means = prompts.reshape(num_classes, len(prompts) // num_classes, -1).mean(axis=1)
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def topk_accuracy(scores: np.ndarray, labels: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent from (items, classes) scores; ties count against the label."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    true_scores = scores[np.arange(len(labels)), labels]
    rank = (scores > true_scores[:, None]).sum(axis=1) + (scores == true_scores[:, None]).sum(axis=1) - 1
    return {f"top{k}": float(100.0 * np.mean(rank < k)) for k in ks}


# -- sound-source localisation (EZ-VSL / SLAVC definitions) ---------------------------------------------
def boxes_to_map(boxes: Sequence[Sequence[float]], size: tuple[int, int] = (224, 224),
                 consensus: int = 1) -> np.ndarray:
    """Ground-truth map (h, w) in [0, 1] from boxes (x0, y0, x1, y1) given as fractions of the image.

    ``consensus=1``: the union of the boxes (VGG-SS). ``consensus=2``: the annotators' boxes are
    summed and divided by 2, capped at 1 (Flickr-SoundNet's annotator consensus, as in LVS/EZ-VSL).
    Box corners are truncated to whole pixels of the ``size`` grid, as EZ-VSL does.
    """
    height, width = size
    gt_map = np.zeros((height, width), dtype=np.float64)
    for x0, y0, x1, y1 in boxes:
        xa, xb = int(np.clip(x0, 0, 1) * width), int(np.clip(x1, 0, 1) * width)
        ya, yb = int(np.clip(y0, 0, 1) * height), int(np.clip(y1, 0, 1) * height)
        gt_map[ya:yb, xa:xb] += 1.0
    if consensus > 1:
        return np.minimum(gt_map / consensus, 1.0)
    return (gt_map > 0).astype(np.float64)


def normalise_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scale a heat map to [0, 1] (a constant map is left as it is)."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    low, high = heatmap.min(), heatmap.max()
    return (heatmap - low) / (high - low) if high > low else heatmap


def mask_ciou(predicted: np.ndarray, gt_map: np.ndarray) -> float:
    """cIoU of a binary prediction: sum(P*G) / (sum(G) + sum(P*[G=0])) (0 when both are empty)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    gt_map = np.asarray(gt_map, dtype=np.float64)
    if predicted.shape != gt_map.shape:
        raise ValueError(f"prediction {predicted.shape} and ground truth {gt_map.shape} differ")
    denominator = gt_map.sum() + (predicted * (gt_map == 0)).sum()
    return float((predicted * gt_map).sum() / denominator) if denominator > 0 else 0.0


def consensus_iou(heatmap: np.ndarray, gt_map: np.ndarray, threshold: float | None = None) -> float:
    """cIoU of one heat map (EZ-VSL's ``cal_CIOU``): sum(P*G) / (sum(G) + sum(P*[G=0])).

    P is the heat map (min-max normalised) binarised at ``threshold`` (``>=``); the default is the
    map's median, ``sorted(values)[n // 2]``, so the top half of the pixels is predicted (EZ-VSL
    test.py).
    """
    heatmap = normalise_heatmap(heatmap)
    if threshold is None:
        threshold = float(np.sort(heatmap.ravel())[heatmap.size // 2])
    return mask_ciou(heatmap >= threshold, gt_map)


def dsol_ciou(heatmap: np.ndarray, gt_map: np.ndarray, fraction: float = 0.1) -> float:
    """cIoU as DSOL's ``cal_ciou`` (music-exp/tools.py): the map is predicted where it exceeds
    ``fraction`` x its maximum (``>``), the ground truth is where ``gt_map > 0``.

    DSOL's maps are non-negative activations; a cosine map is not, so it is min-max scaled to
    [0, 1] first (on a map whose minimum is 0 the two agree).
    """
    heatmap = normalise_heatmap(heatmap)
    return mask_ciou(heatmap > fraction * heatmap.max(), np.asarray(gt_map) > 0)


def pointing_game(heatmaps: np.ndarray, gt_maps: np.ndarray) -> float:
    """Share (percent) of heat maps whose maximum falls inside the ground truth (Zhang et al.'s
    pointing game); a map with several maxima counts the first in row-major order."""
    heatmaps, gt_maps = np.asarray(heatmaps), np.asarray(gt_maps)
    if heatmaps.shape != gt_maps.shape:
        raise ValueError(f"heat maps {heatmaps.shape} and ground truth {gt_maps.shape} differ")
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(axis=1)
    hits = gt_maps.reshape(len(gt_maps), -1)[np.arange(len(flat)), flat] > 0
    return float(100.0 * hits.mean())


def localization_metrics(cious: Sequence[float]) -> dict[str, float]:
    """cIoU@0.5 (share of maps with cIoU >= 0.5), mean cIoU and AUC, all in percent.

    AUC: area under the success-rate curve over cIoU thresholds 0, 0.05, ..., 1 (trapezoids),
    EZ-VSL's ``finalize_AUC``; cIoU@0.5 is what LVS and EZ-VSL report as "cIoU" (AP50).
    """
    values = np.asarray(cious, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no cIoU values")
    thresholds = np.linspace(0.0, 1.0, 21)
    success = np.array([np.mean(values >= t) for t in thresholds])
    auc = float(np.sum((success[1:] + success[:-1]) / 2 * np.diff(thresholds)))
    return {"cIoU@0.5": float(100.0 * np.mean(values >= 0.5)),
            "mean_cIoU": float(100.0 * values.mean()), "AUC": 100.0 * auc}


# -- counterfactual recognition, global protocol: the pair's own score ------------------------------
def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """AP in percent of a binary decision ranked by score, every score a threshold (ties broken
    against the positives); refused on one class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = require_both_classes(labels, "average precision")
    order = np.lexsort((labels, -scores))  # by score, negatives first among ties
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(100.0 * precision[hits].mean())


def max_f1(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The best F1 (percent) over every threshold ``score >= t``; refused on one class."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = require_both_classes(labels, "max-F1")
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        true_positives = np.sum(predicted & labels)
        if true_positives:
            precision, recall = true_positives / predicted.sum(), true_positives / labels.sum()
            best = max(best, 2 * precision * recall / (precision + recall))
    return float(100.0 * best)


def best_threshold(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The threshold t maximising the accuracy of ``score >= t`` (the lowest such t on ties).

    Candidates are the midpoints between consecutive distinct scores, and +-inf.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    distinct = np.unique(scores)
    candidates = np.concatenate([[-np.inf], (distinct[1:] + distinct[:-1]) / 2, [np.inf]])
    accuracies = [np.mean((scores >= t) == labels) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def threshold_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> float:
    """Accuracy in percent of the decision ``score >= threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(100.0 * np.mean((scores >= threshold) == np.asarray(labels, dtype=bool)))


def cross_fitted_accuracy(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Accuracy (percent) with a threshold never chosen on the pairs it judges.

    Two folds stratified by label (the k-th positive and the k-th negative go to fold k mod 2, so
    both folds hold both classes whatever the order): each fold's threshold is
    :func:`best_threshold` on the other fold; the result is the accuracy over all pairs.
    Deterministic, no randomness.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    correct = np.zeros(len(scores), dtype=bool)
    folds = np.zeros(len(scores), dtype=np.int64)
    for value in (False, True):
        members = np.flatnonzero(labels == value)
        folds[members] = np.arange(len(members)) % 2
    for fold in (0, 1):
        fit, judge = folds != fold, folds == fold
        if not fit.any() or not judge.any():
            continue
        threshold = best_threshold(scores[fit], labels[fit])
        correct[judge] = (scores[judge] >= threshold) == labels[judge]
    return float(100.0 * correct.mean()) if len(scores) else float("nan")


def recognition_metrics(scores: Sequence[float], labels: Sequence[bool]) -> dict[str, float]:
    """The ``global`` protocol: AP and max-F1 over every threshold of the pair scores, and
    cross-fitted accuracy, in percent; refused on one class."""
    require_both_classes(labels, "counterfactual recognition")
    return {"AP": average_precision(scores, labels), "max-F1": max_f1(scores, labels),
            "accuracy": cross_fitted_accuracy(scores, labels)}


# -- counterfactual recognition, SLAVC protocol: found only where localised --------------------------
def slavc_scores(cosine_map: np.ndarray) -> np.ndarray:
    """SLAVC's score map: the similarity min-max scaled over its fixed range (logits cos / tau over
    [-1/tau, 1/tau] in test.py), i.e. (cos + 1) / 2."""
    return (np.asarray(cosine_map, dtype=np.float64) + 1.0) / 2.0


def slavc_confidence(scores: np.ndarray) -> float:
    """SLAVC's detection confidence: the mean of the top quarter of the score map
    (``np.sort(scores.flatten())[-n//4:].mean()``, test.py)."""
    flat = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    return float(flat[(-flat.size) // 4:].mean())


def slavc_precision_recall(sounding: Sequence[bool], cious: Sequence[float],
                           confidences: Sequence[float], threshold: float,
                           ciou_threshold: float = 0.5) -> tuple[float, float]:
    """SLAVC's ``calc_precision_recall``: a detection (confidence >= threshold) is a true positive
    only on a sounding frame with cIoU >= ``ciou_threshold``; precision and recall are 1 when
    their denominators are empty."""
    true_pos = false_pos = false_neg = 0
    for is_sounding, ciou, confidence in zip(sounding, cious, confidences):
        detected = confidence >= threshold
        if not is_sounding:
            false_pos += int(detected)
        elif not detected:
            false_neg += 1
        elif ciou >= ciou_threshold:
            true_pos += 1
        else:
            false_pos += 1
    precision = 1.0 if true_pos + false_pos == 0 else true_pos / (true_pos + false_pos)
    recall = 1.0 if true_pos + false_neg == 0 else true_pos / (true_pos + false_neg)
    return precision, recall


def slavc_average_precision(sounding: Sequence[bool], cious: Sequence[float],
                            confidences: Sequence[float]) -> float:
    """SLAVC's ``calc_ap`` in percent: thresholds every ``max(1, n // 200)``-th confidence from the
    second highest down, precision made monotone, summed over the recall steps."""
    thresholds = np.sort(np.asarray(confidences, dtype=np.float64))[:-1][::-max(1, len(cious) // 200)]
    curve = [slavc_precision_recall(sounding, cious, confidences, t) for t in thresholds]
    precision = [p for p, _ in curve]
    recall = [r for _, r in curve]
    envelope = [max(precision[i:]) for i in range(len(precision))]
    return float(100.0 * sum(envelope[i] * (recall[i + 1] - recall[i]) for i in range(len(envelope) - 1)))


def slavc_max_f1(sounding: Sequence[bool], cious: Sequence[float],
                 confidences: Sequence[float]) -> float:
    """SLAVC's max-F1 in percent: the best F1 over every ``max(1, n // 10)``-th confidence, from
    the lowest up (``finalize_stats``)."""
    thresholds = sorted(confidences)[::max(1, len(cious) // 10)]
    scores = [slavc_precision_recall(sounding, cious, confidences, t) for t in thresholds]
    return float(100.0 * max(2 * r * p / (r + p) if r + p > 0 else 0.0 for p, r in scores))


def slavc_recognition_metrics(sounding: Sequence[bool], cious: Sequence[float],
                              confidences: Sequence[float]) -> dict[str, float]:
    """The ``slavc`` protocol's AP, max-F1 and precision (every frame detected), in percent, as
    the SLAVC README reports them; refused on one class."""
    sounding = require_both_classes(sounding, "SLAVC's counterfactual metrics")
    precision, _ = slavc_precision_recall(sounding, cious, confidences, -np.inf)
    return {"AP": slavc_average_precision(sounding, cious, confidences),
            "max-F1": slavc_max_f1(sounding, cious, confidences), "precision": 100.0 * precision}
