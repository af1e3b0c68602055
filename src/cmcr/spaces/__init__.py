"""Frozen pretrained spaces (CLIP, CLAP, precomputed stores) behind one ``embed`` interface."""

from cmcr.spaces.base import MODALITIES, Modality, Preprocessor, Space
from cmcr.spaces.registry import SPACE_ALIASES, SPACE_KINDS, load_space, register_space_kind

__all__ = ["MODALITIES", "Modality", "Preprocessor", "Space", "SPACE_ALIASES", "SPACE_KINDS",
           "load_space", "register_space_kind"]
