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
    "ConnectedModel": "cmcr.model", "Projector": "cmcr.model",
    "EmbeddingStore": "cmcr.store", "StoreWriter": "cmcr.store", "open_store": "cmcr.store",
    "write_store": "cmcr.store",
    "retrieve_pseudo_embeddings": "cmcr.retrieval",
    "connect": "cmcr.connect",
    "unify": "cmcr.unified",
    "load_space": "cmcr.spaces",
    "JointEmbedder": "cmcr.encoders",
    "Index": "cmcr.serve.index", "SearchResult": "cmcr.serve.index",
    "configure_threads": "cmcr.threads", "usable_cores": "cmcr.threads",
}

if TYPE_CHECKING:  # what type checkers and IDEs see
    from cmcr.config import ConnectConfig, MethodConfig, ProjectorConfig, TrainConfig
    from cmcr.connect import connect
    from cmcr.encoders import JointEmbedder
    from cmcr.model import ConnectedModel, Projector
    from cmcr.retrieval import retrieve_pseudo_embeddings
    from cmcr.serve.index import Index, SearchResult
    from cmcr.spaces import load_space
    from cmcr.store import EmbeddingStore, StoreWriter, open_store, write_store
    from cmcr.threads import configure_threads, usable_cores
    from cmcr.unified import unify


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cmcr' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["__version__", "CmcrError", "ConfigError", "StoreError", "CheckpointError", *_LAZY]
