"""Memory retrieval: for each query, the softmax-weighted average of an unpaired memory.

``pseudo_i = sum_k softmax_k(q_i . m_k / tau) m_k`` over the *whole* memory, computed exactly with
a streaming (online) softmax over memory chunks, so RAM stays bounded by
``query_chunk x memory_chunk`` scores whatever the sizes of queries and memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from cmcr.runtime import resolve_device
from cmcr.data.store import EmbeddingStore, StoreInfo, StoreWriter, open_store

RowSource = Union[EmbeddingStore, np.ndarray, torch.Tensor]
Retriever = Callable[..., Union[np.ndarray, None]]  # retrieve_pseudo_embeddings' signature
CACHE_FORMAT = 1


def as_store(rows: RowSource) -> EmbeddingStore:
    """Wrap an in-RAM matrix as a read-only store, so every function takes both."""
    if isinstance(rows, EmbeddingStore):
        return rows
    if isinstance(rows, torch.Tensor):
        rows = rows.detach().cpu().numpy()
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"expected a (rows, dim) matrix, got shape {rows.shape}")
    info = StoreInfo(space=None, modality=None, dim=rows.shape[1], dtype=str(rows.dtype),
                     normalized=None, num_rows=len(rows), shard_rows=len(rows),
                     shards=[{"file": "<array>", "rows": len(rows)}])
    return EmbeddingStore(Path("<array>"), info, [rows])


def _unit_rows(block: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(device)
    return torch.nn.functional.normalize(tensor, dim=1)


def _memory_blocks(memory: EmbeddingStore, memory_chunk: int, device: torch.device,
                   resident: list[torch.Tensor] | None):
    if resident is not None:
        yield from resident
        return
    for _, block in memory.iter_chunks(memory_chunk):
        yield _unit_rows(block, device)


def _softmax_average(query: torch.Tensor, blocks, temperature: float) -> torch.Tensor:
    """Exact softmax(q.M/tau) M over all memory blocks with a running max (online softmax)."""
    n = query.shape[0]
    running_max = torch.full((n,), -torch.inf, device=query.device)
    running_sum = torch.zeros(n, device=query.device)
    weighted = torch.zeros_like(query)
    for block in blocks:
        scores = query @ block.T
        scores.div_(temperature)
        block_max = scores.max(dim=1).values
        new_max = torch.maximum(running_max, block_max)
        rescale = torch.exp(running_max - new_max)
        scores.sub_(new_max[:, None]).exp_()
        running_sum.mul_(rescale).add_(scores.sum(dim=1))
        weighted.mul_(rescale[:, None]).addmm_(scores, block)
        running_max = new_max
    return weighted / running_sum[:, None]


def _top_k_average(query: torch.Tensor, blocks, memory: EmbeddingStore, temperature: float,
                   top_k: int) -> torch.Tensor:
    """softmax over each query's top-k memory rows only (exact top-k, streamed)."""
    n = query.shape[0]
    best_scores = torch.empty((n, 0), device=query.device)
    best_index = torch.empty((n, 0), dtype=torch.long, device=query.device)
    offset = 0
    for block in blocks:
        scores = query @ block.T
        k = min(top_k, scores.shape[1])
        values, index = scores.topk(k, dim=1)
        merged_scores = torch.cat([best_scores, values], dim=1)
        merged_index = torch.cat([best_index, index + offset], dim=1)
        keep = merged_scores.topk(min(top_k, merged_scores.shape[1]), dim=1)
        best_scores = keep.values
        best_index = merged_index.gather(1, keep.indices)
        offset += block.shape[0]
    weights = torch.softmax(best_scores / temperature, dim=1)
    pseudo = torch.zeros_like(query)
    for column in range(best_index.shape[1]):  # one neighbour at a time: RAM ~ query_chunk x dim
        neighbours = _unit_rows(memory.take(best_index[:, column].cpu().numpy()), query.device)
        pseudo.addcmul_(weights[:, column:column + 1], neighbours)
    return pseudo


def retrieve_pseudo_embeddings(
    queries: RowSource,
    memory: RowSource,
    temperature: float = 0.01,
    top_k: int | None = None,
    *,
    query_chunk: int = 4096,
    memory_chunk: int = 16384,
    resident_memory_bytes: int = 512 * 2**20,
    device: str | torch.device | None = "auto",
    out: StoreWriter | None = None,
    progress: bool = False,
    label: str = "memory retrieval",
) -> np.ndarray | None:
    """Pseudo embeddings (n_queries, dim) of ``memory`` for each query row.

    Rows of both inputs are L2-normalised first. Peak RAM beyond inputs and outputs is about
    ``3 x query_chunk x memory_chunk x 4`` bytes (plus the memory itself when it is smaller than
    ``resident_memory_bytes``). With ``out``, rows are appended to that store writer (resuming
    from ``out.num_rows``) and nothing is returned; otherwise a float32 array is returned.
    """
    queries, memory = as_store(queries), as_store(memory)
    if queries.dim != memory.dim:
        raise ValueError(f"queries have dim {queries.dim} but memory has dim {memory.dim}")
    if len(memory) == 0:
        raise ValueError("the memory is empty")
    device = resolve_device(device)
    resident = None
    if len(memory) * memory.dim * 4 <= resident_memory_bytes:
        resident = [_unit_rows(b, device) for _, b in memory.iter_chunks(memory_chunk)]
    start_row = 0
    if out is not None:
        start_row = out.num_rows
        if start_row % query_chunk:
            raise ValueError(f"store shard_rows must be a multiple of query_chunk={query_chunk}")
        ids = queries.ids
    result = None if out is not None else np.empty((len(queries), queries.dim), dtype=np.float32)
    starts = range(start_row, len(queries), query_chunk)
    for start in tqdm(starts, desc=label, unit="chunk", disable=not progress):
        query = _unit_rows(queries.rows(start, start + query_chunk), device)
        blocks = _memory_blocks(memory, memory_chunk, device, resident)
        with torch.inference_mode():
            if top_k is None:
                pseudo = _softmax_average(query, blocks, temperature)
            else:
                pseudo = _top_k_average(query, blocks, memory, temperature, top_k)
        pseudo_rows = pseudo.cpu().numpy()
        if out is not None:
            out.append(pseudo_rows, ids[start:start + len(pseudo_rows)])
        else:
            result[start:start + len(pseudo_rows)] = pseudo_rows
    return result


def store_fingerprint(store: EmbeddingStore) -> dict:
    """What identifies a store's contents cheaply: path, shape, files' sizes and times, edge rows."""
    files = [store.path] if store.path.suffix == ".npy" else [
        store.path / shard["file"] for shard in store.info.shards]
    stats = [(f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    edges = store.rows(0, 2).tobytes() + store.rows(len(store) - 2, len(store)).tobytes()
    return {"path": str(store.path.resolve()), "rows": len(store), "dim": store.dim,
            "files": stats, "edges": hashlib.sha256(edges).hexdigest()}


def cached_pseudo_embeddings(queries: EmbeddingStore, memory: EmbeddingStore, temperature: float,
                             top_k: int | None, cache_dir: str | Path, *, space: str | None = None,
                             modality: str | None = None, device: str | torch.device | None = "auto",
                             query_chunk: int = 4096, progress: bool = True,
                             retrieve: Retriever | None = None) -> EmbeddingStore:
    """Retrieve once and keep the result as a store under ``cache_dir``; resume if interrupted.
    ``retrieve`` runs the retrieval (default :func:`retrieve_pseudo_embeddings`, in this
    process; cmcr.distributed offers one on Ray with the same signature and results)."""
    key_data = {"format": CACHE_FORMAT, "queries": store_fingerprint(queries),
                "memory": store_fingerprint(memory), "temperature": temperature, "top_k": top_k}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"pseudo-{space or 'space'}-{key}"
    if (path / "store.json").exists():
        existing = open_store(path)
        if existing.info.complete:
            return existing
    writer = StoreWriter(path, dim=queries.dim, space=space, modality=modality, dtype="float32",
                         normalized=False, shard_rows=query_chunk * 16)
    (path / "key.json").write_text(json.dumps(key_data, indent=2) + "\n", encoding="utf-8")
    retrieve = retrieve or retrieve_pseudo_embeddings
    retrieve(queries, memory, temperature, top_k, query_chunk=query_chunk, device=device,
             out=writer, progress=progress,
             label=f"memory retrieval ({space or 'space'}: {modality or 'memory'})")
    return writer.close()
