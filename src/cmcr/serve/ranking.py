"""One ranked list from the collections of an index: each collection's nearest rows by cosine,
merged by calibrated score (cmcr.serve.calibration) or raw cosine, then filtered and paged.

Filters that drop rows (a score threshold, a path prefix, near-duplicate removal) are applied
to each collection's nearest rows in rank order; when too few pass, the search is repeated
deeper (4x each time), up to ``MAX_CANDIDATES`` rows a collection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cmcr.errors import ConfigError

MAX_K = 1000
MAX_DEPTH = 10_000  # offset + k
MAX_CANDIDATES = 10_000  # rows read from one collection for one page, filters included
RANKS = ("auto", "calibrated", "cosine")


@dataclass(frozen=True)
class SearchFilters:
    """Which rows a search may return (every field optional)."""

    modality: str | None = None  # only rows of this modality
    collections: tuple[str, ...] = ()  # only rows of these collections (by name)
    path_prefix: str | None = None  # only rows whose shown path (or id) starts with this
    min_score: float | None = None  # only rows whose cosine is at least this
    min_calibrated: float | None = None  # only rows whose calibrated score is at least this
    dedup: float | None = None  # drop a row whose cosine to a better-ranked result is >= this

    def __post_init__(self) -> None:
        if self.modality in ("", "all", "any", "everything"):
            object.__setattr__(self, "modality", None)
        if isinstance(self.collections, str):
            object.__setattr__(self, "collections", tuple(
                name for name in self.collections.split(",") if name))
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score is a cosine, between -1 and 1; got {self.min_score}")
        if self.dedup is not None and not 0.0 < self.dedup <= 1.0:
            raise ConfigError(f"dedup is the cosine above which a result counts as a near "
                              f"duplicate of a better one, in (0, 1]; got {self.dedup}")

    @property
    def drops_rows(self) -> bool:
        return any(value is not None for value in (self.path_prefix, self.min_score,
                                                    self.min_calibrated, self.dedup))


def check_page(k: int, offset: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")
    if offset < 0 or offset + k > MAX_DEPTH:
        raise ConfigError(f"offset must be >= 0 and offset + k <= {MAX_DEPTH}, got offset {offset}")


@dataclass
class Candidates:
    """The nearest rows of the searched collections, with both scores."""

    rows: np.ndarray  # (n,) global row numbers
    scores: np.ndarray  # (n,) cosines
    calibrated: np.ndarray | None  # (n,) calibrated scores; None when a collection has none
    complete: bool  # every collection gave all the rows it could for these filters


def gather(searches: list[tuple[Any, int, int, Any]], query: np.ndarray, depth: int,
           filters: SearchFilters) -> Candidates:
    """Each collection's ``depth`` nearest rows. ``searches``: (FAISS searcher, first global row,
    rows, calibration or None) per collection."""
    rows, scores, calibrated, complete = [], [], [], True
    for searcher, start, count, calibration in searches:
        wanted = min(depth, count)
        found_scores, found = searcher.search(query.reshape(1, -1), wanted)
        keep = found[0] >= 0
        found_scores, found = found_scores[0][keep], found[0][keep]
        z = calibration.calibrate(query, found_scores) if calibration is not None else None
        rows.append(found.astype(np.int64) + start)
        scores.append(found_scores)
        calibrated.append(z)
        complete &= _exhausted(len(found) < wanted or wanted == count, found_scores, z, filters)
    merged_z = None if any(z is None for z in calibrated) else np.concatenate(calibrated)
    return Candidates(np.concatenate(rows), np.concatenate(scores), merged_z, complete)


def _exhausted(all_rows: bool, scores: np.ndarray, z: np.ndarray | None,
               filters: SearchFilters) -> bool:
    """Whether searching a collection deeper cannot add rows that pass the thresholds."""
    if all_rows:
        return True
    below = filters.min_score is not None and len(scores) and scores[-1] < filters.min_score
    below_z = (filters.min_calibrated is not None and z is not None and len(z)
               and z[-1] < filters.min_calibrated)
    return bool(below or below_z)


def ranked_order(candidates: Candidates, rank: str) -> np.ndarray:
    """Candidate positions best first: by calibrated score (``calibrated``), else by cosine."""
    key = candidates.calibrated if rank == "calibrated" else candidates.scores
    return np.argsort(-np.asarray(key, dtype=np.float64), kind="stable")


def select(candidates: Candidates, order: np.ndarray, filters: SearchFilters, wanted: int,
           exclude: int | None, path_of: Callable[[int], str],
           vector_of: Callable[[int], np.ndarray]) -> list[int]:
    """Positions (in ``order``) of the first ``wanted`` candidates that pass the filters."""
    kept: list[int] = []
    kept_vectors: np.ndarray | None = None  # (wanted, d), filled up to len(kept) when deduping
    for position in order:
        row = int(candidates.rows[position])
        if row == exclude or not _passes(candidates, position, filters):
            continue
        if filters.path_prefix is not None and not path_of(row).startswith(filters.path_prefix):
            continue
        if filters.dedup is not None:
            vector = vector_of(row)
            if kept_vectors is None:
                kept_vectors = np.zeros((wanted, len(vector)), dtype=np.float32)
            if kept and float(np.max(kept_vectors[:len(kept)] @ vector)) >= filters.dedup:
                continue
            kept_vectors[len(kept)] = vector
        kept.append(int(position))
        if len(kept) >= wanted:
            break
    return kept


def _passes(candidates: Candidates, position: int, filters: SearchFilters) -> bool:
    if filters.min_score is not None and candidates.scores[position] < filters.min_score:
        return False
    return not (filters.min_calibrated is not None and candidates.calibrated is not None
                and candidates.calibrated[position] < filters.min_calibrated)
