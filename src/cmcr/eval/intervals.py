"""How sure a number is: per-query retrieval scores, percentile bootstrap intervals over the
queries (of one method, or of the paired difference between two), and the spread over repeated
runs (world seeds). Pure functions on arrays; every interval is a 95% one by default."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cmcr.eval.metrics import ranks_of_positives

RESAMPLES = 1000
LEVEL = 0.95


def per_query_retrieval(similarity: np.ndarray, positives: np.ndarray,
                        ks: Sequence[int] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """Each query's R@k hit (0 or 100) and average precision (percent): (queries,) arrays whose
    means are :func:`cmcr.eval.metrics.retrieval_metrics`' numbers. A query without positives
    misses every R@k and has AP NaN (mAP skips it), as there."""
    scores: dict[str, list[float]] = {f"R@{k}": [] for k in ks}
    scores["mAP"] = []
    for query_ranks in ranks_of_positives(similarity, positives):
        best = query_ranks.min() if len(query_ranks) else np.inf
        for k in ks:
            scores[f"R@{k}"].append(100.0 * (best < k))
        ordered = np.sort(query_ranks)
        precision = (np.arange(len(ordered)) + 1) / (ordered + 1)
        scores["mAP"].append(100.0 * precision.mean() if len(ordered) else np.nan)
    return {key: np.asarray(values, dtype=np.float64) for key, values in scores.items()}


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The mean of ``values`` (one per query) over ``resamples`` resamples of the queries with
    replacement: (resamples,). NaN entries (queries a metric skips) are left out of each mean.
    The same ``seed`` draws the same resamples, so two methods' arrays are resampled in step."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"need a non-empty 1-d array of per-query values, got shape {values.shape}")
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    resampled = values[draws]
    counted = np.sum(~np.isnan(resampled), axis=1)
    return np.where(counted > 0, np.nansum(resampled, axis=1) / np.maximum(counted, 1), np.nan)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    """The central ``level`` percentile interval [low, high] of bootstrap ``samples``."""
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]


def bootstrap_interval(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> list[float]:
    """Percentile bootstrap interval [low, high] of the mean of per-query ``values``."""
    return percentile_interval(bootstrap_means(values, resamples, seed), level)


def paired_difference(treated: np.ndarray, control: np.ndarray, resamples: int = RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> dict[str, object]:
    """Effect of ``treated`` over ``control`` on the same queries: the mean of the per-query
    differences with a paired bootstrap interval; ``significant`` when it excludes zero."""
    treated, control = np.asarray(treated, float), np.asarray(control, float)
    if treated.shape != control.shape:
        raise ValueError(f"paired scores need one value per query each: {treated.shape} vs "
                         f"{control.shape}")
    differences = treated - control
    low, high = bootstrap_interval(differences, resamples, seed, level)
    return {"effect": float(np.nanmean(differences)), "ci95": [low, high],
            "significant": bool(low > 0 or high < 0)}


def spread(values: Sequence[float], level: float = LEVEL) -> dict[str, object]:
    """Mean, sample standard deviation, range and a Student-t interval of the mean of repeated
    runs (e.g. one value per world seed); with one run the spread is 0 and the interval a point."""
    from scipy import stats

    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"need at least one value, got shape {array.shape}")
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    half = (float(stats.t.ppf(0.5 + level / 2, len(array) - 1)) * std / np.sqrt(len(array))
            if len(array) > 1 else 0.0)
    return {"mean": mean, "std": std, "min": float(array.min()), "max": float(array.max()),
            "ci95": [mean - half, mean + half], "values": [float(v) for v in array]}
