"""``cmcr connect``: validate the stores, retrieve pseudo pairs once, train, save the model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.config import ConnectConfig, ModelConfig, RetrievalConfig, SpaceSpec, save_config
from cmcr.errors import StoreError
from cmcr.extend import train_extend
from cmcr.model import ConnectedModel
from cmcr.retrieval import (Retriever, as_store, cached_pseudo_embeddings,
                            retrieve_pseudo_embeddings)
from cmcr.runtime import resolve_device, run_record, seed_everything, write_json
from cmcr.store import EmbeddingStore, open_store
from cmcr.train import TrainingData, train_projectors

log = logging.getLogger(__name__)


def check_rows(store: EmbeddingStore, role: str, allow_incomplete: bool = False) -> None:
    """Reject empty and unfinished stores and NaN/inf rows, naming the file and the row."""
    if len(store) == 0:
        raise StoreError(f"{store.path}: {role} store is empty")
    if not store.info.complete and not allow_incomplete:
        raise StoreError(f"{store.path}: {role} store is incomplete ({len(store)} rows so far: an "
                         "interrupted 'cmcr embed'?); finish it by re-running the same 'cmcr "
                         "embed', or pass --allow-incomplete to train on the rows it has")
    bad = store.first_nonfinite_row()
    if bad is not None:
        raise StoreError(f"{store.path}: {role} row {bad} (id {store.ids[bad]!r}) holds NaN or inf")


def _check_modality(store: EmbeddingStore, expected: str, role: str) -> None:
    if store.modality is not None and store.modality != expected:
        raise StoreError(f"{store.path}: {role} store holds modality '{store.modality}', "
                         f"the config expects '{expected}'")


def open_training_stores(config: ConnectConfig, allow_incomplete: bool = False
                         ) -> tuple[dict[str, EmbeddingStore], dict[str, EmbeddingStore | None]]:
    """Open and check every store the config names; errors name the file and the problem."""
    queries, memories = {}, {}
    for name, space in config.spaces.items():
        query_store = open_store(space.queries)
        _check_modality(query_store, config.shared_modality, f"'{name}' queries")
        check_rows(query_store, f"'{name}' queries", allow_incomplete)
        queries[name] = query_store
        memories[name] = None
        if config.method.use_memory:
            if space.memory is None:
                raise StoreError(f"space '{name}' has no 'memory' store, but method.use_memory is "
                                 f"true: give spaces.{name}.memory or set method.use_memory=false")
            memory_store = open_store(space.memory)
            _check_modality(memory_store, space.memory_modality, f"'{name}' memory")
            if memory_store.dim != query_store.dim:
                raise StoreError(f"{memory_store.path}: memory dim {memory_store.dim} differs from "
                                 f"the queries' dim {query_store.dim} ({query_store.path}): both "
                                 f"must come from space '{name}'")
            check_rows(memory_store, f"'{name}' memory", allow_incomplete)
            memories[name] = memory_store
    (name_a, store_a), (name_b, store_b) = queries.items()
    if len(store_a) != len(store_b):
        raise StoreError(f"query stores differ in length: {store_a.path} has {len(store_a)} rows "
                         f"('{name_a}'), {store_b.path} has {len(store_b)} ('{name_b}'); row i of "
                         "both must be the same item")
    return queries, memories


def retriever(config: RetrievalConfig) -> Retriever:
    """The memory retrieval the config selects: this process, or Ray (imported only then)."""
    if config.engine == "ray":
        from cmcr.distributed import ray_retriever

        return ray_retriever(config.address)
    return retrieve_pseudo_embeddings


def build_model(config: ConnectConfig, queries: dict[str, EmbeddingStore]) -> ConnectedModel:
    """A fresh connected model whose projectors fit the stores' dims."""
    spaces = {name: SpaceSpec(modalities=[config.shared_modality, space.memory_modality],
                              dim=queries[name].dim)
              for name, space in config.spaces.items()}
    model_config = ModelConfig(spaces=spaces,
                               projectors={name: config.projector for name in config.spaces},
                               shared_modality=config.shared_modality,
                               shared_modality_space=config.space_names[0], train=config.train,
                               method=config.method)
    return ConnectedModel(model_config)


def connect(config: ConnectConfig, out_dir: str | Path, *, resume: bool = False,
            device: str | torch.device | None = "auto", cache_dir: str | Path | None = None,
            progress: bool = True, label: str | None = None,
            allow_incomplete: bool = False) -> ConnectedModel:
    """Run C-MCR (or, with ``mode: extend``, Ex-MCR's extension) end to end and save the model
    (plus run record) in ``out_dir``; progress bars say ``label`` (default: the folder's name)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "cache"
    queries, memories = open_training_stores(config, allow_incomplete)
    save_config(config, out_dir / "connect_config.yaml")
    options = {"resume": resume, "device": device, "progress": progress,
               "label": f"train {label or out_dir.name}"}
    if config.mode == "extend":
        seed_everything(config.train.seed)  # the head's initialisation depends on it
        model = train_extend(config, queries, memories, out_dir, cache_dir, **options)
    else:
        model = _train_cmcr(config, queries, memories, out_dir, cache_dir, **options)
    model.to("cpu").save_pretrained(out_dir)
    write_json(out_dir / "run.json", run_record(config.to_dict(), device=str(device)))
    return model


def _train_cmcr(config: ConnectConfig, queries: dict[str, EmbeddingStore],
                memories: dict[str, EmbeddingStore | None], out_dir: Path, cache_dir: Path, *,
                resume: bool, device: torch.device, progress: bool, label: str) -> ConnectedModel:
    """Retrieve (or reuse) the pseudo pairs, then train C-MCR's two projectors."""
    pseudo = None
    if config.method.use_memory:
        pseudo = tuple(
            cached_pseudo_embeddings(queries[name], memories[name], config.method.memory_temperature,
                                     config.method.memory_top_k, cache_dir, space=name,
                                     modality=config.spaces[name].memory_modality, device=device,
                                     progress=progress, retrieve=retriever(config.retrieval))
            for name in config.space_names)
    data = TrainingData(space_names=tuple(config.space_names),
                        queries=tuple(queries[n] for n in config.space_names), pseudo=pseudo)
    seed_everything(config.train.seed)  # the projectors' initialisation depends on it
    model = build_model(config, queries)
    model = train_projectors(model, data, config.train, config.method, out_dir / "training",
                             resume=resume, device=device, progress=progress, label=label)
    if pseudo is None or config.method.pseudo_rounds < 2:
        return model
    # Round 2 (a recipe option): pseudo pairs retrieved again in round 1's joint space, then
    # fresh projectors trained on them.
    data.pseudo = tuple(as_store(joint_space_pseudo(model, name, queries[name], memories[name],
                                                    config.method.memory_temperature,
                                                    config.method.memory_top_k))
                        for name in config.space_names)
    seed_everything(config.train.seed)
    model = build_model(config, queries)
    return train_projectors(model, data, config.train, config.method, out_dir / "training-round2",
                            resume=resume, device=device, progress=progress,
                            label=f"{label} (round 2)")


def joint_space_pseudo(model: ConnectedModel, space: str, queries: EmbeddingStore,
                       memory: EmbeddingStore, temperature: float, top_k: int | None,
                       chunk: int = 4096) -> np.ndarray:
    """Pseudo partners whose softmax weights come from the joint space (projected query .
    projected memory / tau, over the top-k or the whole memory) but which average the *raw*
    unit memory rows, as the projectors take them. Holds the memory in RAM."""
    memory_rows = torch.from_numpy(np.ascontiguousarray(memory.to_numpy(), dtype=np.float32))
    joint_memory = model.project(space, memory_rows)
    raw_memory = F.normalize(memory_rows, dim=1).to(joint_memory.device)
    result = np.empty((len(queries), queries.dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            joint = model.project(space, queries.rows(start, start + chunk))
            scores = joint @ joint_memory.T / temperature
            if top_k is not None and top_k < scores.shape[1]:
                values, index = scores.topk(top_k, dim=1)
                scores = torch.full_like(scores, float("-inf")).scatter_(1, index, values)
            weights = torch.softmax(scores, dim=1)
            result[start:start + len(weights)] = (weights @ raw_memory).cpu().numpy()
    return result
