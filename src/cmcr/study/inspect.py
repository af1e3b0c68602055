"""``cmcr inspect``: the geometry of a user's own stores beside real CLIP's and the toy
spaces', and the recipe the regime map recommends for it.

Two stores of one space (say CLIP image rows and CLIP caption rows) give the space's modality
gap; when they share row ids (an image and its caption under one id) they are paired and also
give the matched cosine and the paired residual. Large stores are sampled (``limit`` rows).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmcr.spaces import geometry
from cmcr.errors import StoreError
from cmcr.data.store import EmbeddingStore, open_store

MIN_ROWS = 4  # the gap's stability compares two halves of each store
SAMPLE_LIMIT = 20_000  # rows measured per store; more add little to these averages
MAP_FILE = "regime_map.json"  # the shipped summary of `cmcr study regimes` (default settings)


@dataclass
class Sampled:
    """A store and the rows measured from it (all, or a uniform sample)."""

    store: EmbeddingStore
    index: np.ndarray | None  # None: every row

    @property
    def rows(self) -> np.ndarray:
        return self.store.to_numpy() if self.index is None else self.store.take(self.index)

    @property
    def label(self) -> str:
        parts = [p for p in (self.store.space, self.store.modality) if p]
        return f"{self.store.path}" + (f" ({', '.join(parts)})" if parts else "")


def store_geometry(sampled: Sampled) -> dict[str, Any]:
    """One store's own numbers: rows, dim, effective_dim, within_cosine, how many were measured."""
    rows = sampled.rows
    if not np.all(np.isfinite(rows)):
        raise StoreError(f"{sampled.store.path}: holds NaN or inf rows; run 'cmcr store info' on it")
    return {"store": str(sampled.store.path), "space": sampled.store.space,
            "modality": sampled.store.modality, "rows": len(sampled.store),
            "measured_rows": len(rows), "dim": sampled.store.dim,
            "effective_dim": geometry.effective_dim(rows),
            "within_cosine": geometry.within_cosine(rows)}


def paired_index(first: EmbeddingStore, second: EmbeddingStore, limit: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices of ids both stores hold (a sample of at most ``limit``), or None when they
    share fewer than 4 ids."""
    where = {row_id: i for i, row_id in enumerate(second.ids)}
    pairs = [(i, where[row_id]) for i, row_id in enumerate(first.ids) if row_id in where]
    if len(pairs) < 4:
        return None
    chosen = geometry.sample_rows(len(pairs), limit, seed)
    pairs_array = np.asarray(pairs) if chosen is None else np.asarray(pairs)[chosen]
    return pairs_array[:, 0], pairs_array[:, 1]


def pair_geometry(first: Sampled, second: Sampled, noise_var: float, limit: int,
                  seed: int) -> dict[str, Any]:
    """A space's geometry from two of its modalities' stores (the ``GEOMETRY_KEYS``), paired by
    id when they share ids."""
    if first.store.dim != second.store.dim:
        raise StoreError(f"{first.store.path} has dim {first.store.dim}, {second.store.path} "
                         f"{second.store.dim}: a modality gap needs two stores of one space")
    paired = paired_index(first.store, second.store, limit, seed)
    result = geometry.space_geometry(first.rows, second.rows, noise_var, paired=False, seed=seed)
    result["paired_rows"] = 0
    if paired is not None:
        left, right = first.store.take(paired[0]), second.store.take(paired[1])
        result["matched_cosine"] = geometry.matched_cosine(left, right)
        result["paired_residual_variance"] = geometry.paired_residual_variance(left, right)
        result["paired_rows"] = len(left)
    return result


def load_regime_map(path: str | Path | None = None) -> dict[str, Any]:
    """The regime map's summary: the shipped one, or ``regimes.json`` of a ``cmcr study
    regimes`` run."""
    source = Path(path) if path else Path(str(resources.files("cmcr.study") / MAP_FILE))
    try:
        regime_map = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise StoreError(f"{source}: cannot read the regime map: {err}") from None
    cells = regime_map.get("cells") if isinstance(regime_map, dict) else None
    if not cells or not all(isinstance(c, dict) and {"measured", "recipes", "recommended"} <= set(c)
                            for c in cells):
        raise StoreError(f"{source}: not a regime map: expected the regimes.json that 'cmcr "
                         "study regimes' writes (a non-empty 'cells' list)")
    return regime_map


def nearest_cell(measured: dict[str, Any], regime_map: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The map cell closest to a measured geometry: distance over log2 participation ratio,
    modality gap (x4) and, when measured, matched cosine (x4) (one unit ~ a doubling of PR or
    a 0.25 step of gap or cosine)."""
    def distance(cell: dict[str, Any]) -> float:
        g = cell["measured"]["a"]
        total = (math.log2(measured["effective_dim"] / g["effective_dim"]) ** 2
                 + (4 * (measured["modality_gap"] - g["modality_gap"])) ** 2)
        if measured.get("matched_cosine") is not None:
            total += (4 * (measured["matched_cosine"] - g["matched_cosine"])) ** 2
        return math.sqrt(total)
    best = min(regime_map["cells"], key=distance)
    return best, distance(best)


def recommend(measured: dict[str, Any], regime_map: dict[str, Any]) -> dict[str, Any]:
    """The recipe the nearest map cell recommends, and why (its paired effect over cmcr)."""
    cell, distance = nearest_cell(measured, regime_map)
    recipe = cell["recommended"]
    effect = cell["recipes"][recipe]["R@1"]["minus_cmcr"] if recipe != "cmcr" else None
    settings = regime_map.get("settings", {}).get("recipes", {}).get(recipe, {})
    return {"recipe": recipe, "settings": settings, "cell": cell["name"],
            "cell_geometry": cell["measured"]["a"], "distance": distance,
            "effect_over_cmcr_R@1": effect, "far": distance > 1.5,
            "cmcr_R@1": cell["recipes"]["cmcr"]["R@1"]["mean"],
            "recipe_R@1": cell["recipes"][recipe]["R@1"]["mean"]}


def inspect_stores(paths: Sequence[str | Path], noise_var: float = 0.004,
                   limit: int = SAMPLE_LIMIT, seed: int = 0,
                   regime_map: str | Path | None = None) -> dict[str, Any]:
    """Measure stores (``cmcr inspect --json``'s object): each store's numbers, the geometry
    of each consecutive pair (first and second, third and fourth, ...) of one dim with the
    real-CLIP reference, and the regime map's recommendation for the first pair."""
    if not paths:
        raise StoreError("give at least one store (two of one space for its modality gap)")
    opened = [open_store(p) for p in paths]
    for store in opened:
        if len(store) < MIN_ROWS:
            raise StoreError(f"{store.path}: holds {len(store)} rows; measuring a space's "
                             f"geometry needs at least {MIN_ROWS}")
    sampled = [Sampled(s, geometry.sample_rows(len(s), limit, seed)) for s in opened]
    result: dict[str, Any] = {"sample_limit": limit, "noise_var": noise_var,
                              "stores": [store_geometry(s) for s in sampled], "spaces": []}
    for first, second in zip(sampled[0::2], sampled[1::2]):
        result["spaces"].append({"stores": [str(first.store.path), str(second.store.path)],
                                 **pair_geometry(first, second, noise_var, limit, seed),
                                 "reference": dict(geometry.REAL_CLIP)})
    if result["spaces"]:
        result["recommendation"] = recommend(result["spaces"][0], load_regime_map(regime_map))
    return result
