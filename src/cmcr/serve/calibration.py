"""Score calibration: one ranking across modalities.

A connected space keeps a modality gap: on the demo's index a text query's cosine to a picture
of its concept is about 0.9, to a sound of it about 0.05, and every sound scores below every
picture. Raw cosines of different collections cannot be merged into one list.

So each hit's cosine is compared with what the rows of its own collection score for the same
query. For a query q and a collection with row mean mu and row covariance S, the collection's
cosines to q have mean ``q . mu`` and variance ``q^T S q``; the calibrated score is

    z = (cosine - q . mu) / sqrt(q^T S q)

how many standard deviations the row stands above a typical row of its collection for this
query. It needs no sample queries of each modality (an index of pictures and sounds still
calibrates text queries), adapts to each query, and keeps each collection's own order (z grows
with the cosine), so merging collections by z is exact paging over per-collection top lists.

mu and S are estimated at build time from up to ``CALIBRATION_ROWS`` rows drawn at random from
the built segment (as stored: compressed indexes' rows as they are scored) and written to
``segment-NNNNN.moments.npy`` ((d + 1, d) float32: the mean, then the covariance), whose sha256
``index.json`` records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmcr.errors import StoreError

CALIBRATION_ROWS = 20_000
CALIBRATION_SEED = 3
MOMENTS_SUFFIX = "moments.npy"
MIN_VARIANCE = 1e-12  # a collection of identical rows: its spread is not 0, so z stays finite


def sample_ids(total: int, count: int = CALIBRATION_ROWS, seed: int = CALIBRATION_SEED
               ) -> np.ndarray:
    """``min(count, total)`` distinct row numbers drawn at random, sorted."""
    count = min(count, total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def stored_rows(index: Any, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of a FAISS index as it stores them (IVF: through a direct map, made once)."""
    from cmcr.serve.ann import require_faiss

    faiss = require_faiss()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()
    return np.stack([np.asarray(index.reconstruct(int(i)), dtype=np.float32) for i in ids])


def row_moments(rows: np.ndarray) -> np.ndarray:
    """(n, d) rows -> (d + 1, d) float32: their mean, then their covariance (summed in float64)."""
    rows = np.asarray(rows, dtype=np.float64)
    mean = rows.mean(axis=0)
    centred = rows - mean
    covariance = centred.T @ centred / max(1, len(rows))
    return np.concatenate([mean[None], covariance]).astype(np.float32)


def segment_moments(index: Any, count: int = CALIBRATION_ROWS) -> tuple[np.ndarray, int]:
    """(moments, rows sampled) of a built segment's FAISS index."""
    ids = sample_ids(int(index.ntotal), count)
    return row_moments(stored_rows(index, ids)), len(ids)


def write_moments(path: Path, moments: np.ndarray) -> None:
    from cmcr.data.atomic import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(moments, dtype=np.float32))


def read_moments(path: Path, dim: int) -> np.ndarray:
    """A segment's moments file, refused (naming it) unless it holds a finite (dim + 1, dim)
    float32 mean and a symmetric covariance with a non-negative diagonal."""
    try:
        moments = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise StoreError(f"{path}: unreadable calibration moments ({err}); rebuild the index or "
                         "run 'cmcr index calibrate'") from None
    if moments.dtype != np.float32 or moments.shape != (dim + 1, dim):
        raise StoreError(f"{path}: calibration moments must be ({dim + 1}, {dim}) float32, got "
                         f"{moments.shape} {moments.dtype}")
    covariance = moments[1:]
    if not np.isfinite(moments).all() or (np.diag(covariance) < 0).any() \
            or not np.allclose(covariance, covariance.T, atol=1e-5):
        raise StoreError(f"{path}: calibration moments hold NaN/inf, a negative variance or an "
                         "asymmetric covariance: the file is damaged; run 'cmcr index calibrate'")
    return moments


class CollectionCalibration:
    """One collection's row moments: turns its cosines for a query into calibrated scores."""

    def __init__(self, moments: np.ndarray):
        self.mean = np.asarray(moments[0], dtype=np.float64)
        self.covariance = np.asarray(moments[1:], dtype=np.float64)

    def baseline(self, query: np.ndarray) -> tuple[float, float]:
        """(mean, standard deviation) of the collection's cosines to ``query`` (d,)."""
        query = np.asarray(query, dtype=np.float64).reshape(-1)
        variance = float(query @ self.covariance @ query)
        return float(query @ self.mean), max(MIN_VARIANCE, variance) ** 0.5

    def calibrate(self, query: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """Cosines of this collection's rows to ``query`` -> calibrated scores (same shape)."""
        mean, std = self.baseline(query)
        return (np.asarray(cosines, dtype=np.float64) - mean) / std
