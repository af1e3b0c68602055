"""Where a contrastive space sits next to real CLIP: its modality gap (Liang et al., NeurIPS
2022, "Mind the Gap") and how much of an embedding C-MCR's noise leaves (metrics.json's
``regime``). Pure functions of unit rows."""

from __future__ import annotations

import numpy as np
import torch

from cmcr.method import add_noise


def modality_gap(first: np.ndarray, second: np.ndarray) -> float:
    """Liang et al.'s gap: the distance between the centroids of two modalities' (n, d) unit
    rows, ``||mean(first) - mean(second)||`` (0: no gap; at most 2)."""
    return float(np.linalg.norm(np.mean(first, axis=0) - np.mean(second, axis=0)))


def matched_cosine(first: np.ndarray, second: np.ndarray) -> float:
    """Mean cosine of matched pairs: row i of ``first`` with row i of ``second`` (unit rows)."""
    if first.shape != second.shape:
        raise ValueError(f"matched pairs need equal shapes, got {first.shape} and {second.shape}")
    return float(np.mean(np.sum(first * second, axis=1)))


def effective_dim(rows: np.ndarray) -> float:
    """Participation ratio of the rows' covariance, (sum l)^2 / sum l^2 over its eigenvalues l:
    how many directions the embeddings really use (d when isotropic, 1 on a line)."""
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(np.asarray(rows, dtype=np.float64).T)), 0, None)
    return float(eigenvalues.sum() ** 2 / max((eigenvalues ** 2).sum(), 1e-30))


def noise_cosine(rows: np.ndarray, variance: float, seed: int = 0) -> float:
    """Mean cosine between (n, d) unit rows and the same rows after C-MCR's noise
    (``normalise(x + eps)``, eps ~ N(0, variance I)): about 1 / sqrt(1 + d * variance)."""
    clean = torch.as_tensor(np.asarray(rows), dtype=torch.float64)
    noised = add_noise(clean, variance, torch.Generator().manual_seed(seed))
    return float(torch.mean(torch.sum(clean * noised, dim=1)))


def random_unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """(count, dim) unit rows drawn uniformly on the sphere (for the noise at another dim)."""
    rows = np.random.default_rng(seed).standard_normal((count, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def space_regime(media: np.ndarray, captions: np.ndarray, noise_var: float) -> dict[str, float]:
    """One space's regime from matched (media, caption) unit rows: ``dim``, ``modality_gap``,
    ``matched_cosine``, ``noise_cosine`` (over both modalities' rows at ``noise_var``) and the
    media rows' ``effective_dim``."""
    return {"dim": int(media.shape[1]), "modality_gap": modality_gap(media, captions),
            "effective_dim": effective_dim(media),
            "matched_cosine": matched_cosine(media, captions),
            "noise_cosine": noise_cosine(np.vstack([media, captions]), noise_var),
            "noise_var": float(noise_var)}


def same_meaning_partners(concept_sets: list[list[str]], batch_size: int) -> float:
    """Expected number of other texts with exactly the same concepts in a uniformly drawn batch
    of ``batch_size`` texts: the false negatives InfoNCE pushes away per text."""
    counts: dict[frozenset[str], int] = {}
    for concepts in concept_sets:
        key = frozenset(concepts)
        counts[key] = counts.get(key, 0) + 1
    total = len(concept_sets)
    collision = sum(n * (n - 1) for n in counts.values()) / (total * (total - 1)) if total > 1 else 0.0
    return float((min(batch_size, total) - 1) * collision)
