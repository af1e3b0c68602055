"""cmcr: Connecting Multi-modal Contrastive Representations (C-MCR) without paired data."""

from cmcr.version import __version__
from cmcr.errors import CmcrError, ConfigError, StoreError, CheckpointError
from cmcr.config import ConnectConfig, MethodConfig, ProjectorConfig, TrainConfig
from cmcr.model import ConnectedModel, Projector
from cmcr.store import EmbeddingStore, StoreWriter, open_store, write_store
from cmcr.retrieval import retrieve_pseudo_embeddings
from cmcr.connect import connect
from cmcr.unified import unify
from cmcr.spaces import load_space
from cmcr.encoders import JointEmbedder
from cmcr.serve.index import Index, SearchResult
from cmcr.threads import configure_threads, usable_cores

__all__ = [
    "__version__",
    "CmcrError",
    "ConfigError",
    "StoreError",
    "CheckpointError",
    "ConnectConfig",
    "MethodConfig",
    "ProjectorConfig",
    "TrainConfig",
    "ConnectedModel",
    "Projector",
    "EmbeddingStore",
    "StoreWriter",
    "open_store",
    "write_store",
    "retrieve_pseudo_embeddings",
    "connect",
    "unify",
    "load_space",
    "JointEmbedder",
    "Index",
    "SearchResult",
    "configure_threads",
    "usable_cores",
]
