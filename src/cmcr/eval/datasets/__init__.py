"""Evaluation datasets: one reader a file, found by name through :data:`DATASET_READERS`.

Adding a benchmark is one reader module, one entry here and its protocols in
:mod:`cmcr.eval.protocols`; nothing is imported until used. A reader is called as
``reader(root, protocol_name)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from cmcr.errors import ConfigError
from cmcr.eval.datasets.base import EvalDataset
from cmcr.eval.protocols import resolve_protocol

# dataset name -> "module:function(root, protocol) -> EvalDataset"
DATASET_READERS: dict[str, str] = {
    "ave": "cmcr.eval.datasets.ave:read_ave",
    "flickr-soundnet": "cmcr.eval.datasets.flickr_soundnet:read_flickr_soundnet",
    "vggss": "cmcr.eval.datasets.vggss:read_vggss",
    "music-solo": "cmcr.eval.datasets.music_solo:read_music_solo",
    "flickr-soundnet-extended": "cmcr.eval.datasets.extended:read_flickr_extended",
    "vggss-extended": "cmcr.eval.datasets.extended:read_vggss_extended",
    "modelnet40": "cmcr.eval.datasets.modelnet40:read_modelnet40",
    "audiocaps": "cmcr.eval.datasets.audiocaps:read_audiocaps",
    "clotho": "cmcr.eval.datasets.clotho:read_clotho",
    "esc50": "cmcr.eval.datasets.esc50:read_esc50",
    "coco": "cmcr.eval.datasets.coco:read_coco",
    "imagenet": "cmcr.eval.datasets.imagenet:read_imagenet",
}


def load_dataset(name: str, root: str | Path, protocol: str | None = None) -> EvalDataset:
    """Read dataset ``name`` from its folder ``root`` (in the layout its reader documents) as
    protocol ``protocol`` asks (the dataset's default protocol when None)."""
    if name not in DATASET_READERS:
        raise ConfigError(f"unknown dataset '{name}'; known: {', '.join(DATASET_READERS)}")
    chosen = resolve_protocol(name, protocol)
    module_name, _, function_name = DATASET_READERS[name].partition(":")
    reader = getattr(importlib.import_module(module_name), function_name)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: dataset folder not found (--root must be the folder of '{name}')")
    dataset = reader(root, chosen.name)
    dataset.protocol = chosen.name
    return dataset


__all__ = ["DATASET_READERS", "EvalDataset", "load_dataset"]
