"""Extend mode (Ex-MCR): keep the base space frozen and train the leaf space's head into it.

``cmcr connect`` with ``mode: extend`` opens the same stores as C-MCR (each space's shared-
modality queries and its memory), builds the modality-centric pool (cmcr.extend.aggregate) once and
caches it, then trains the leaf head with the dense and intra-space objective (cmcr.extend.objective) in the
same loop as C-MCR (cmcr.method.train: AdamW + cosine, checkpoints, --resume). The saved model maps
the base space by the identity: everything the base space aligned stays exactly as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmcr.extend.aggregate import PARTS, Pool, modality_centric_pool
from cmcr.data.atomic import atomic_file
from cmcr.config import ConnectConfig, ModelConfig, ProjectorConfig, SpaceSpec, extend_pair_names
from cmcr.errors import ConfigError
from cmcr.extend.objective import extend_batch_loss
from cmcr.method.model import ConnectedModel
from cmcr.method.retrieval import store_fingerprint
from cmcr.data.store import EmbeddingStore
from cmcr.method.train import train_projectors
from cmcr.extend.unified import frozen_space_record

POOL_FORMAT = 1


def query_sets(config: ConnectConfig) -> list[str]:
    """``extend.queries`` (modality names) as cmcr.extend.aggregate's query sets."""
    shared, leaf_memory, base_memory = config.extend_modalities()
    sets = {shared: "shared", leaf_memory: "leaf_memory", base_memory: "base_memory"}
    return [sets[name] for name in config.extend_queries()]


def pair_roles(config: ConnectConfig) -> dict[str, tuple[str, str]]:
    """``extend.pairs`` as name -> (leaf role, base role), roles 'shared' or 'memory'."""
    every = extend_pair_names(*config.extend_modalities())
    roles = dict(zip(every, [("shared", "shared"), ("memory", "memory"), ("shared", "memory"),
                             ("memory", "shared")]))
    return {name: roles[name] for name in config.extend_pairs()}


@dataclass
class ExtendData:
    """The pool's parts (leaf shared, leaf memory, base shared, base memory), held in RAM."""

    space_names: tuple[str, str]  # (leaf, base)
    parts: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.parts[0])

    def batch_loader(self, device: torch.device):
        resident = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).to(device)
                    for p in self.parts]
        return lambda index: [t[torch.from_numpy(index).to(device)] for t in resident]


def cached_pool(config: ConnectConfig, queries: dict[str, EmbeddingStore],
                memories: dict[str, EmbeddingStore], cache_dir: Path) -> Pool:
    """The modality-centric pool, built once and kept under ``cache_dir`` (keyed by the stores'
    fingerprints, the memory temperature and the query sets)."""
    base, leaf = config.base_space, config.leaf_space
    stores = {"leaf_shared": queries[leaf], "base_shared": queries[base],
              "leaf_memory": memories[leaf], "base_memory": memories[base]}
    sets = query_sets(config)
    key_data = {"format": POOL_FORMAT, "sets": sets,
                "temperature": config.method.memory_temperature,
                **{name: store_fingerprint(store) for name, store in stores.items()}}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"extend-pool-{leaf}-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return Pool(*(saved[name] for name in PARTS), origin=saved["origin"])
    pool = modality_centric_pool(stores["leaf_shared"], stores["base_shared"],
                                 stores["leaf_memory"], stores["base_memory"],
                                 config.method.memory_temperature, sets)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")) as tmp:
        np.savez(tmp, origin=pool.origin, **dict(zip(PARTS, pool.parts())))
    return pool


def build_extend_model(config: ConnectConfig, queries: dict[str, EmbeddingStore]
                       ) -> ConnectedModel:
    """A fresh extended model: the base space by the identity, the leaf by ``config.projector``."""
    base, leaf = config.base_space, config.leaf_space
    base_dim = queries[base].dim
    if config.projector.out_dim != base_dim:
        raise ConfigError(f"extend mode maps '{leaf}' into the base space '{base}' ({base_dim}-d), "
                          f"but 'projector.out_dim' is {config.projector.out_dim}: set "
                          f"projector.out_dim={base_dim}")
    spaces = {}
    for name in (base, leaf):
        frozen, digest = frozen_space_record(queries[name].space)  # what unify checks
        spaces[name] = SpaceSpec(modalities=[config.shared_modality,
                                             config.spaces[name].memory_modality],
                                 dim=queries[name].dim, frozen=frozen, weights_sha256=digest)
    projectors = {base: ProjectorConfig(kind="identity", out_dim=base_dim),
                  leaf: config.projector}
    return ConnectedModel(ModelConfig(
        spaces=spaces, projectors=projectors, shared_modality=config.shared_modality,
        shared_modality_space=base, source="cmcr:extend", train=config.train,
        method=config.method))


def train_extend(config: ConnectConfig, queries: dict[str, EmbeddingStore],
                 memories: dict[str, EmbeddingStore], out_dir: Path, cache_dir: Path, *,
                 resume: bool, device: torch.device, progress: bool, label: str
                 ) -> ConnectedModel:
    """Build (or reuse) the pool, then train the leaf head; the model is in eval mode."""
    if config.retrieval.engine != "local":
        raise ConfigError("extend mode builds its pool in this process: 'retrieval.engine: "
                          f"{config.retrieval.engine}' (--ray) is not supported there yet")
    pool = cached_pool(config, queries, memories, cache_dir)
    data = ExtendData((config.leaf_space, config.base_space), pool.parts())
    model = build_extend_model(config, queries)
    settings = {"mode": "extend", "extend": dataclasses.asdict(config.extend),
                "pool_rows": {name: int(np.sum(pool.origin == name))
                              for name in query_sets(config)}}
    return train_projectors(model, data, config.train, config.method, out_dir / "training",
                            resume=resume, device=device, progress=progress, label=label,
                            batch_loss=extend_batch_loss(config.leaf_space, pair_roles(config),
                                                         config.method),
                            extra_settings=settings)
