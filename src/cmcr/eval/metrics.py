"""Retrieval metrics as pure functions on similarity matrices."""

from __future__ import annotations

import math

import numpy as np


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


def recall_at_k(similarity: np.ndarray, positives: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
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
                      ks=(1, 5, 10)) -> dict[str, float]:
    """R@k and mAP; ``positives`` defaults to the diagonal (query i matches candidate i)."""
    similarity = np.asarray(similarity)
    if positives is None:
        if similarity.shape[0] != similarity.shape[1]:
            raise ValueError("without positives the similarity matrix must be square")
        positives = np.eye(len(similarity), dtype=bool)
    return {**recall_at_k(similarity, positives, ks),
            "mAP": mean_average_precision(similarity, positives)}


def chance_retrieval_metrics(num_candidates: int, positives_per_query: int = 1,
                             ks=(1, 5, 10)) -> dict[str, float]:
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
