"""The built-in world's regime helpers: what C-MCR's noise leaves of a row (measured by drawing
the noise, :func:`noise_cosine`) and how many same-meaning texts share a batch. The geometry
itself (gap, participation ratio, ...) is :mod:`cmcr.spaces.geometry`."""

from __future__ import annotations

import numpy as np
import torch

from cmcr.method.objective import add_noise


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
