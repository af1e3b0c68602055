"""The geometry of a contrastive space, measured from its rows: how many directions its
embeddings use, how far apart its modalities sit (the modality gap, Liang et al., NeurIPS 2022),
how close matched pairs are, and what C-MCR's noise leaves of a row. Pure numpy functions of
(n, d) rows (normalised here), used by ``cmcr inspect``, the demo's regime block and the regime
map (``cmcr study regimes``).

``REAL_CLIP`` holds the same measurements of real CLIP ViT-B/16 rows (500 COCO pairs), the
reference every geometry number cmcr prints is shown beside.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# metrics.json's ``regime`` and ``cmcr inspect --json`` use these names for one space
GEOMETRY_KEYS = ("dim", "effective_dim", "modality_gap", "gap_stability", "matched_cosine",
                 "within_cosine", "paired_residual_variance", "noise_cosine")

REAL_CLIP_SOURCE = ("OpenAI CLIP ViT-B/16, 500 MSCOCO val2017 image-caption pairs (the data "
                    "of Liang et al., 'Mind the Gap', NeurIPS 2022, Weixin-Liang/Modality-Gap, "
                    "MIT); C3 (Zhang et al., ICLR 2024) measures the gap of ViT-B/32 on 123,287 "
                    "COCO pairs as 0.83 +- 0.01")
# Measured from those rows with this module (tests/test_geometry.py re-measures them);
# effective_dim of image rows (text rows: 41.7; 500 rows underestimate it), noise_cosine at the
# paper's sigma^2 = 0.004.
REAL_CLIP: dict[str, float] = {
    "dim": 512, "effective_dim": 42.7, "modality_gap": 0.851, "gap_stability": 0.996,
    "matched_cosine": 0.310, "within_cosine": 0.523, "paired_residual_variance": 0.00128,
    "noise_cosine": 0.573}

# The shipped toy spaces, measured the same way by `cmcr demo --seed 0` (metrics.json's regime:
# 6,000 paired rows): no cone (rows spread around the origin), a small gap, and pairs far
# closer than real CLIP's.
TOY_SPACES: dict[str, dict[str, float]] = {
    "toy CLIP": {"dim": 512, "effective_dim": 9.5, "modality_gap": 0.195, "gap_stability": 0.987,
                 "matched_cosine": 0.869, "within_cosine": 0.030,
                 "paired_residual_variance": 0.00044, "noise_cosine": 0.573},
    "toy CLAP": {"dim": 512, "effective_dim": 6.5, "modality_gap": 0.086, "gap_stability": 0.958,
                 "matched_cosine": 0.935, "within_cosine": 0.010,
                 "paired_residual_variance": 0.00024, "noise_cosine": 0.573},
}


def unit_rows(rows: Any) -> np.ndarray:
    """(n, d) float64 rows scaled to unit length (zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"expected (rows, dim), got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def effective_dim(rows: Any) -> float:
    """Participation ratio of the rows' covariance, (sum l)^2 / sum l^2 over its eigenvalues l:
    how many directions the embeddings really use (d when isotropic, 1 on a line). Unit rows.
    Fewer rows than directions underestimate it."""
    unit = unit_rows(rows)
    centred = unit - unit.mean(axis=0)
    # the eigenvalues of X^T X / (n - 1) via the smaller Gram side, so n << d stays cheap
    gram = centred @ centred.T if len(unit) < unit.shape[1] else centred.T @ centred
    eigenvalues = np.clip(np.linalg.eigvalsh(gram / max(1, len(unit) - 1)), 0, None)
    return float(eigenvalues.sum() ** 2 / max((eigenvalues ** 2).sum(), 1e-30))


def modality_gap(first: Any, second: Any) -> float:
    """Liang et al.'s gap: the distance between the centroids of two modalities' unit rows,
    ``||mean(first) - mean(second)||`` (0: no gap; at most 2). Needs no pairing."""
    return float(np.linalg.norm(gap_vector(first, second)))


def gap_vector(first: Any, second: Any) -> np.ndarray:
    """mean(first) - mean(second) of unit rows: the gap's direction and size."""
    return unit_rows(first).mean(axis=0) - unit_rows(second).mean(axis=0)


def gap_stability(first: Any, second: Any, seed: int = 0) -> float:
    """Cosine between the gap vectors of two random disjoint halves of each modality's rows
    (1: the gap has one direction, as in real CLIP; near 0: it is noise)."""
    rng = np.random.default_rng(seed)
    first, second = unit_rows(first), unit_rows(second)
    if min(len(first), len(second)) < 4:
        raise ValueError("the gap's stability needs at least 4 rows of each modality")
    halves = [np.array_split(rng.permutation(len(rows)), 2) for rows in (first, second)]
    one = gap_vector(first[halves[0][0]], second[halves[1][0]])
    two = gap_vector(first[halves[0][1]], second[halves[1][1]])
    return float(one @ two / max(np.linalg.norm(one) * np.linalg.norm(two), 1e-30))


def matched_cosine(first: Any, second: Any) -> float:
    """Mean cosine of matched pairs: row i of ``first`` with row i of ``second``."""
    first, second = unit_rows(first), unit_rows(second)
    if first.shape != second.shape:
        raise ValueError(f"matched pairs need equal shapes, got {first.shape} and {second.shape}")
    return float(np.mean(np.sum(first * second, axis=1)))


def within_cosine(rows: Any) -> float:
    """Mean cosine between two different rows of one modality (the cone: near 1 when every
    embedding points the same way), exactly, in O(n d): (|sum x|^2 - n) / (n (n - 1))."""
    unit = unit_rows(rows)
    count = len(unit)
    if count < 2:
        raise ValueError("the within-modality cosine needs at least 2 rows")
    total = unit.sum(axis=0)
    return float((total @ total - np.sum(unit * unit)) / (count * (count - 1)))


def paired_residual_variance(first: Any, second: Any) -> float:
    """Per-dimension variance of the matched pairs' difference after removing the mean gap:
    ``mean_j var_i(x_ij - y_ij)``, the scale of C-MCR's noise that would span a pair."""
    first, second = unit_rows(first), unit_rows(second)
    if first.shape != second.shape:
        raise ValueError(f"matched pairs need equal shapes, got {first.shape} and {second.shape}")
    difference = first - second
    return float(np.mean(np.var(difference, axis=0, ddof=1)))


def noise_cosine_at(dim: int, variance: float) -> float:
    """Expected cosine between a unit row and ``normalise(x + eps)``, eps ~ N(0, variance I),
    in ``dim`` dims: about 1 / sqrt(1 + dim * variance)."""
    return float(1.0 / math.sqrt(1.0 + dim * variance))


def variance_for_noise_cosine(dim: int, cosine: float) -> float:
    """The sigma^2 whose noise leaves cosine ``cosine`` in ``dim`` dims: (1/c^2 - 1)/d."""
    return (1.0 / cosine ** 2 - 1.0) / dim


def space_geometry(media: Any, texts: Any, noise_var: float, paired: bool = True,
                   seed: int = 0) -> dict[str, Any]:
    """One space's geometry (the keys of ``GEOMETRY_KEYS``) from its two modalities' rows;
    ``paired``: row i of both is one pair (else matched cosine and paired residual are None).
    ``effective_dim`` is the media rows'; ``within_cosine`` the mean over both modalities."""
    media, texts = unit_rows(media), unit_rows(texts)
    dim = int(media.shape[1])
    return {
        "dim": dim, "effective_dim": effective_dim(media),
        "modality_gap": modality_gap(media, texts),
        "gap_stability": gap_stability(media, texts, seed),
        "matched_cosine": matched_cosine(media, texts) if paired else None,
        "within_cosine": 0.5 * (within_cosine(media) + within_cosine(texts)),
        "paired_residual_variance": paired_residual_variance(media, texts) if paired else None,
        "noise_cosine": noise_cosine_at(dim, noise_var),
    }


def sample_rows(count: int, limit: int, seed: int = 0) -> np.ndarray | None:
    """Sorted row indices of a uniform sample of ``limit`` among ``count`` rows, or None when
    all fit (measurements then see every row)."""
    if count <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


# key -> (what a reader sees, how a value is printed)
