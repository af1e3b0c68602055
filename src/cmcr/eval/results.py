"""What every evaluation task shares: the embedder it asks, the result it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from cmcr.eval.metrics import UndefinedMetricError


class Embedder(Protocol):
    def embed(self, modality: str, inputs: Sequence[Any], ids: Sequence[str]) -> np.ndarray: ...

    def embed_patches(self, images: Sequence[Any], ids: Sequence[str]) -> np.ndarray: ...


@dataclass
class TaskResult:
    """Metric rows (row name -> metric -> value, in percent) and what a figure needs."""

    task: str
    dataset: str
    count: int
    rows: dict[str, dict[str, float]]
    figure: dict[str, Any] = field(default_factory=dict)
    protocol: str = "standard"
    notes: list[str] = field(default_factory=list)  # items the task left out, and why


def embed_items(embedder: Embedder, modality: str, inputs: Sequence[Any],
                ids: Sequence[str]) -> np.ndarray:
    """(n, d) unit rows, one per item; an item given as a list or tuple of inputs (e.g. the frames
    of an event) is the renormalised mean of its members' rows, as prompt ensembling does."""
    if not any(isinstance(item, (list, tuple)) for item in inputs):
        return embedder.embed(modality, inputs, ids)
    flat, owner, flat_ids = [], [], []
    for index, (item, item_id) in enumerate(zip(inputs, ids)):
        members = list(item) if isinstance(item, (list, tuple)) else [item]
        for number, member in enumerate(members):
            flat.append(member)
            owner.append(index)
            flat_ids.append(f"{item_id}#{number}")
    rows = np.asarray(embedder.embed(modality, flat, flat_ids), dtype=np.float64)
    sums = np.zeros((len(inputs), rows.shape[1]))
    np.add.at(sums, np.asarray(owner), rows)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def require_items(count: int, minimum: int, what: str) -> None:
    """Refuse a task on fewer items than it means anything on (one candidate is always found)."""
    if count < minimum:
        raise UndefinedMetricError(f"{what} needs at least {minimum} items, got {count} (with "
                                   "--limit, take more)")
