"""cmcr: Connecting Multi-modal Contrastive Representations (C-MCR) without paired data.

The public names below load on first use (as transformers' top level does), so ``import cmcr``
and ``cmcr --help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cmcr.version import __version__
from cmcr.errors import CmcrError, ConfigError, StoreError, CheckpointError

_LAZY: dict[str, str] = {
    "ConnectConfig": "cmcr.config", "MethodConfig": "cmcr.config",
    "ProjectorConfig": "cmcr.config", "TrainConfig": "cmcr.config",
    "ConnectedModel": "cmcr.method.model", "Projector": "cmcr.method.model",
    "EmbeddingStore": "cmcr.data.store", "StoreWriter": "cmcr.data.store", "open_store": "cmcr.data.store",
    "write_store": "cmcr.data.store",
    "retrieve_pseudo_embeddings": "cmcr.method.retrieval",
    "connect": "cmcr.pipeline",
    "unify": "cmcr.extend.unified",
    "load_space": "cmcr.spaces",
    "JointEmbedder": "cmcr.encoders",
    "Index": "cmcr.serve.index", "SearchResult": "cmcr.serve.index",
    "configure_threads": "cmcr.runtime.threads", "usable_cores": "cmcr.runtime.threads",
}

if TYPE_CHECKING:  # what type checkers and IDEs see
    from cmcr.config import ConnectConfig, MethodConfig, ProjectorConfig, TrainConfig
    from cmcr.pipeline import connect
    from cmcr.encoders import JointEmbedder
    from cmcr.method.model import ConnectedModel, Projector
    from cmcr.method.retrieval import retrieve_pseudo_embeddings
    from cmcr.serve.index import Index, SearchResult
    from cmcr.spaces import load_space
    from cmcr.data.store import EmbeddingStore, StoreWriter, open_store, write_store
    from cmcr.runtime.threads import configure_threads, usable_cores
    from cmcr.extend.unified import unify


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cmcr' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__", "CmcrError", "ConfigError", "StoreError", "CheckpointError",
    "ConnectConfig", "MethodConfig", "ProjectorConfig", "TrainConfig", "ConnectedModel",
    "Projector", "EmbeddingStore", "StoreWriter", "open_store", "write_store",
    "retrieve_pseudo_embeddings", "connect", "unify", "load_space", "JointEmbedder", "Index",
    "SearchResult", "configure_threads", "usable_cores",
]
