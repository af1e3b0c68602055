"""``cmcr connect``: validate the stores, retrieve pseudo pairs once, train, save the model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.config import ConnectConfig, ModelConfig, RetrievalConfig, SpaceSpec, save_config
from cmcr.errors import StoreError
from cmcr.extend.train import train_extend
from cmcr.spaces.geometry import paired_residual_variance, sample_rows, unit_rows
from cmcr.method.model import ConnectedModel
from cmcr.method.retrieval import (Retriever, as_store, cached_pseudo_embeddings,
                            retrieve_pseudo_embeddings)
from cmcr.runtime import resolve_device, run_record, seed_everything, write_json
from cmcr.data.store import EmbeddingStore, open_store
from cmcr.method.train import TrainingData, centred_rows, train_projectors

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
    check_training_rows(config, queries, memories)
    return queries, memories


def check_training_rows(config: ConnectConfig, queries: dict[str, EmbeddingStore],
                        memories: dict[str, EmbeddingStore | None]) -> None:
    """Refuse, before any retrieval, stores too small to train on: InfoNCE contrasts each row
    with another (C-MCR trains on the queries' rows; extend mode on its pool's query sets)."""
    if config.mode == "extend":
        leaf, base = config.leaf_space, config.base_space
        sets = dict(zip(config.extend_modalities(), (queries[leaf], memories[leaf], memories[base])))
        stores = [sets[modality] for modality in config.extend_queries()]
    else:
        stores = [queries[config.space_names[0]]]
    rows = sum(len(store) for store in stores if store is not None)
    if rows < 2:
        named = ", ".join(str(store.path) for store in stores if store is not None)
        raise StoreError(f"{named}: {rows} row to train on; training needs at least 2 (InfoNCE "
                         "contrasts each row with another): embed more items")


def retriever(config: RetrievalConfig) -> Retriever:
    """The memory retrieval the config selects: this process, or Ray (imported only then)."""
    if config.engine == "ray":
        from cmcr.distributed import ray_retriever

        return ray_retriever(config.address, config.timeout)
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


def portable_config(config: ConnectConfig, folder: Path) -> ConnectConfig:
    """A copy whose store paths are relative to ``folder``, where it is saved: configs are read
    relative to their file, so the saved one re-runs from any directory and moves with the run."""
    import copy
    import os

    portable = copy.deepcopy(config)
    base = folder.resolve()
    for space in portable.spaces.values():
        space.queries = os.path.relpath(Path(space.queries).expanduser().resolve(), base)
        if space.memory is not None:
            space.memory = os.path.relpath(Path(space.memory).expanduser().resolve(), base)
    return portable


def connect(config: ConnectConfig, out_dir: str | Path, *, resume: bool = False,
            device: str | torch.device | None = "auto", cache_dir: str | Path | None = None,
            progress: bool = True, label: str | None = None,
            allow_incomplete: bool = False) -> ConnectedModel:
    """Run C-MCR (or, with ``mode: extend``, Ex-MCR's extension) end to end and save the model
    (plus run record) in ``out_dir``; progress bars say ``label`` (default: the folder's name)."""
    from cmcr.runtime.threads import apply_thread_policy

    apply_thread_policy()  # cmcr's thread choice unless the caller made one (cmcr.runtime.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "cache"
    queries, memories = open_training_stores(config, allow_incomplete)
    save_config(portable_config(config, out_dir), out_dir / "connect_config.yaml")
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
    set_modality_means(model, config, queries, memories)
    residuals = calibration_residuals(config, data, model)
    model = train_projectors(model, data, config.train, config.method, out_dir / "training",
                             resume=resume, device=device, progress=progress, label=label,
                             residuals=residuals)
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
    set_modality_means(model, config, queries, memories)
    return train_projectors(model, data, config.train, config.method, out_dir / "training-round2",
                            resume=resume, device=device, progress=progress,
                            label=f"{label} (round 2)",
                            residuals=calibration_residuals(config, data, model))


MEAN_ROWS = 100_000  # rows sampled to estimate a modality's mean for centring


def set_modality_means(model: ConnectedModel, config: ConnectConfig,
                       queries: dict[str, EmbeddingStore],
                       memories: dict[str, EmbeddingStore | None]) -> None:
    """For ``method.center_modalities``: store each space's mean unit text row (its queries)
    and mean unit media row (its memory) in the model, which subtracts them from then on."""
    if not model.centred:
        return
    for name in config.space_names:
        memory = memories[name]
        if memory is None:
            raise StoreError(f"method.center_modalities needs space '{name}''s memory store to "
                             f"estimate the mean of its {config.spaces[name].memory_modality} rows")
        for modality, store in ((config.shared_modality, queries[name]),
                                (config.spaces[name].memory_modality, memory)):
            model.centres.set_mean(name, modality, mean_unit_row(store, MEAN_ROWS, config.train.seed))


def mean_unit_row(store: EmbeddingStore, limit: int, seed: int) -> np.ndarray:
    """The mean of a store's rows scaled to unit length (a uniform sample of ``limit``)."""
    index = sample_rows(len(store), limit, seed)
    rows = store.to_numpy() if index is None else store.take(index)
    return unit_rows(rows).mean(axis=0)


CALIBRATION_ROWS = 20_000  # rows sampled to measure a space's text-pseudo residual


def calibration_residuals(config: ConnectConfig, data: TrainingData, model: ConnectedModel
                          ) -> dict[str, float] | None:
    """For ``method.noise_calibration``: each space's per-dimension variance of (text - its
    pseudo partner) after removing their mean difference, on up to ``CALIBRATION_ROWS`` rows
    as the projector sees them (centred in a centred model); logged, and kept in the training
    checkpoint's settings so a resume must match them."""
    if config.method.noise_calibration is None or not config.method.use_noise:
        return None
    if data.pseudo is None:
        raise StoreError("method.noise_calibration measures the text-pseudo residual, which "
                         "needs pseudo pairs: set method.use_memory=true or use noise_var")
    index = sample_rows(len(data), CALIBRATION_ROWS, seed=config.train.seed)
    index = np.arange(len(data)) if index is None else index
    residuals = {}
    for name, query, pseudo in zip(data.space_names, data.queries, data.pseudo):
        rows = [centred_rows(model, name, is_pseudo, torch.from_numpy(store.take(index))).numpy()
                for is_pseudo, store in ((False, query), (True, pseudo))]
        residuals[name] = paired_residual_variance(*rows)
    log.info("noise calibrated to the text-pseudo residual: %s", {
        name: config.method.noise_calibration * value for name, value in residuals.items()})
    return residuals


def joint_space_pseudo(model: ConnectedModel, space: str, queries: EmbeddingStore,
                       memory: EmbeddingStore, temperature: float, top_k: int | None,
                       chunk: int = 4096) -> np.ndarray:
    """Pseudo partners whose softmax weights come from the joint space (projected query .
    projected memory / tau, over the top-k or the whole memory) but which average the *raw*
    unit memory rows, as the projectors take them. Holds the memory in RAM."""
    memory_rows = torch.from_numpy(np.ascontiguousarray(memory.to_numpy(), dtype=np.float32))
    joint_memory = model.project(space, memory_rows, model.memory_modality(space))
    raw_memory = F.normalize(memory_rows, dim=1).to(joint_memory.device)
    result = np.empty((len(queries), queries.dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(queries), chunk):
            joint = model.project(space, queries.rows(start, start + chunk),
                                  model.config.shared_modality)
            scores = joint @ joint_memory.T / temperature
            if top_k is not None and top_k < scores.shape[1]:
                values, index = scores.topk(top_k, dim=1)
                scores = torch.full_like(scores, float("-inf")).scatter_(1, index, values)
            weights = torch.softmax(scores, dim=1)
            result[start:start + len(weights)] = (weights @ raw_memory).cpu().numpy()
    return result
