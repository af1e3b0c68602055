"""Ex-MCR's "various modality-centric" training data: pseudo tuples from every modality.

A leaf space L (e.g. CLAP) is extended into a base space B (e.g. CLIP) through a shared modality
embedded in both (texts: row i of ``leaf_shared`` and ``base_shared`` is the same text). Every
query becomes a tuple (leaf shared, leaf memory, base shared, base memory), e.g. (CLAP text,
CLAP audio, CLIP text, CLIP image), by memory retrieval (softmax over a whole memory):

- shared-centric: a text; its audio retrieved in L, its image retrieved in B;
- leaf-memory-centric: an audio clip; its text is the softmax-weighted mean of the texts in L,
  the same weights over the same texts in B give its CLIP text, which retrieves an image;
- base-memory-centric: an image, symmetrically.

The training pool is the union of the chosen sets. Rows come out L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cmcr.method.retrieval import RowSource, as_store, retrieve_pseudo_embeddings

QUERY_SETS = ("shared", "leaf_memory", "base_memory")
PARTS = ("leaf_shared", "leaf_memory", "base_shared", "base_memory")


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def transfer_average(queries: RowSource, keys: RowSource, values: Sequence[RowSource],
                     temperature: float, *, query_chunk: int = 4096,
                     key_chunk: int = 16384) -> list[np.ndarray]:
    """For each query row, ``softmax_k(q . K_k / tau) V_k`` for every values matrix V whose row k
    belongs with key row k (e.g. the same text in another space): [(n, dim of V)], exactly, with
    an online softmax over key chunks (RAM ~ query_chunk x key_chunk scores). Unit rows in."""
    queries, keys = as_store(queries), as_store(keys)
    stores = [as_store(v) for v in values]
    if any(len(v) != len(keys) for v in stores):
        raise ValueError(f"every values matrix needs one row per key ({len(keys)} keys)")
    if queries.dim != keys.dim:
        raise ValueError(f"queries have dim {queries.dim} but keys have dim {keys.dim}")
    results = [np.empty((len(queries), v.dim), dtype=np.float32) for v in stores]
    for start in range(0, len(queries), query_chunk):
        query = torch.from_numpy(_unit(queries.rows(start, start + query_chunk)))
        running_max = torch.full((len(query),), -torch.inf)
        running_sum = torch.zeros(len(query))
        weighted = [torch.zeros(len(query), v.dim) for v in stores]
        for first in range(0, len(keys), key_chunk):
            scores = query @ torch.from_numpy(_unit(keys.rows(first, first + key_chunk))).T
            scores /= temperature
            new_max = torch.maximum(running_max, scores.max(dim=1).values)
            rescale = torch.exp(running_max - new_max)
            scores = torch.exp(scores - new_max[:, None])
            running_sum = running_sum * rescale + scores.sum(dim=1)
            for index, store in enumerate(stores):
                block = torch.from_numpy(_unit(store.rows(first, first + key_chunk)))
                weighted[index] = weighted[index] * rescale[:, None] + scores @ block
            running_max = new_max
        for result, total in zip(results, weighted):
            result[start:start + len(query)] = (total / running_sum[:, None]).numpy()
    return results


@dataclass
class Pool:
    """Training tuples: row i of every part belongs together; ``origin`` names row i's set."""

    leaf_shared: np.ndarray
    leaf_memory: np.ndarray
    base_shared: np.ndarray
    base_memory: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.origin)

    def parts(self) -> list[np.ndarray]:
        return [getattr(self, name) for name in PARTS]


def _retrieve(queries: np.ndarray, memory: RowSource, temperature: float) -> np.ndarray:
    return retrieve_pseudo_embeddings(queries, memory, temperature, device="cpu")


def centric_set(query_set: str, leaf_shared: RowSource, base_shared: RowSource,
                leaf_memory: RowSource, base_memory: RowSource,
                temperature: float) -> list[np.ndarray]:
    """The four parts (unit rows) of one modality-centric set: 'shared' (the shared rows),
    'leaf_memory' or 'base_memory' (that memory's rows as queries)."""
    if query_set == "shared":
        texts_l, texts_b = (_unit(as_store(s).to_numpy()) for s in (leaf_shared, base_shared))
        return [texts_l, _unit(_retrieve(texts_l, leaf_memory, temperature)), texts_b,
                _unit(_retrieve(texts_b, base_memory, temperature))]
    if query_set == "leaf_memory":
        items = _unit(as_store(leaf_memory).to_numpy())
        texts_l, texts_b = map(_unit, transfer_average(items, leaf_shared,
                                                       [leaf_shared, base_shared], temperature))
        return [texts_l, items, texts_b, _unit(_retrieve(texts_b, base_memory, temperature))]
    if query_set == "base_memory":
        items = _unit(as_store(base_memory).to_numpy())
        texts_b, texts_l = map(_unit, transfer_average(items, base_shared,
                                                       [base_shared, leaf_shared], temperature))
        return [texts_l, _unit(_retrieve(texts_l, leaf_memory, temperature)), texts_b, items]
    raise ValueError(f"unknown query set '{query_set}'; valid: {', '.join(QUERY_SETS)}")


def modality_centric_pool(leaf_shared: RowSource, base_shared: RowSource,
                          leaf_memory: RowSource, base_memory: RowSource, temperature: float,
                          query_sets: Sequence[str] = QUERY_SETS) -> Pool:
    """The union of the chosen modality-centric sets (see the module docstring)."""
    if len(as_store(leaf_shared)) != len(as_store(base_shared)):
        raise ValueError("the shared rows of both spaces must be the same items, row for row")
    sets = [centric_set(name, leaf_shared, base_shared, leaf_memory, base_memory, temperature)
            for name in query_sets]
    parts = [np.concatenate([s[index] for s in sets]) for index in range(len(PARTS))]
    origin = np.concatenate([np.full(len(s[0]), name) for name, s in zip(query_sets, sets)])
    return Pool(*parts, origin=origin)
