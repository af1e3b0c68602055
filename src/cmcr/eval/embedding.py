"""Embeddings for evaluation: frozen spaces (cached as stores) then, optionally, a projection.

Frozen embeddings are what costs time, and they do not depend on the connected model, so the
cache keys them by space, dataset, modality and the exact inputs: a second model evaluated on
the same data, or a re-run, reads them back instead of re-encoding.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cmcr.encoders import JointEmbedder
from cmcr.errors import ConfigError, StoreError
from cmcr.eval.media import AudioSegment, VideoFrame, decode
from cmcr.method.model import ConnectedModel
from cmcr.spaces.base import Space
from cmcr.data.store import open_store, write_store


def slug(text: str) -> str:
    """A file-name-safe form of a space name or path."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "space"


def input_key(item: Any, item_id: str) -> str:
    """What identifies an input in the cache: a path or text by value, a media part by its
    ``cache_key`` (file and time), anything else by its id."""
    if isinstance(item, (str, Path)):
        return str(item)
    return str(getattr(item, "cache_key", f"id:{item_id}"))


def inputs_digest(inputs: Sequence[Any], ids: Sequence[str], tag: str = "") -> str:
    """A short hash of the inputs (see :func:`input_key`)."""
    keys = [input_key(x, i) for x, i in zip(inputs, ids)]
    return hashlib.sha1("\n".join([tag, *keys]).encode("utf-8")).hexdigest()[:16]


def decoded(space: Space, modality: str, chunk: list[Any]) -> list[Any]:
    """The chunk with media parts (a video frame, a stretch of audio) decoded for ``space``."""
    if not any(isinstance(item, (VideoFrame, AudioSegment)) for item in chunk):
        return chunk
    rate = getattr(space.preprocessor(modality), "sample_rate", None) if modality == "audio" else None
    return [decode(item, modality, rate) for item in chunk]


class EvalEmbedder:
    """Embeds a dataset's inputs in a connected model's joint space, or in one frozen space.

    ``model=None`` evaluates the frozen space ``spaces[single]`` itself (retention baselines).
    """

    def __init__(self, spaces: Mapping[str, Space], model: ConnectedModel | None = None, *,
                 text_space: str | None = None, cache_dir: Path | None = None, dataset: str = "",
                 batch_size: int = 32, progress: bool = True, patch_mode: str = "tokens"):
        if model is None and len(spaces) != 1:
            raise ConfigError("without a connected model, evaluate exactly one space")
        self.joint = JointEmbedder(model, spaces, text_space) if model is not None else None
        self.model = model
        self.spaces = dict(spaces)
        self.cache_dir = cache_dir
        self.dataset = dataset
        self.batch_size = batch_size
        self.progress = progress
        self.patch_mode = patch_mode  # "tokens" or "values" (see ClipSpace.embed_image_patches)

    def space_for(self, modality: str) -> str:
        if self.joint is not None:
            name = self.joint.space_for(modality)
            if name not in self.spaces:  # a unified model's leaf that was not given
                raise ConfigError(f"{modality} goes through the model's '{name}' space: give "
                                  f"--space {name}=KIND:NAME_OR_PATH")
            return name
        name, space = next(iter(self.spaces.items()))
        space.check_modality(modality)
        return name

    # -- public ----------------------------------------------------------------------------------
    def embed(self, modality: str, inputs: Sequence[Any], ids: Sequence[str]) -> np.ndarray:
        """(n, d) unit rows: the frozen space's, projected when there is a model."""
        name = self.space_for(modality)
        frozen = self.cached(name, modality, inputs, ids, patches=False)
        return self.project(name, frozen, modality)

    def embed_patches(self, images: Sequence[Any], ids: Sequence[str]) -> np.ndarray:
        """(n, patches, d) unit rows: CLIP patch tokens, projected when there is a model."""
        name = self.space_for("image")
        if not hasattr(self.spaces[name], "embed_image_patches"):
            raise ConfigError(f"space '{self.spaces[name].name}' has no patch tokens (CLIP spaces do)")
        flat = self.cached(name, "image", images, ids, patches=True)
        count = len(flat) // max(1, len(images))
        projected = self.project(name, flat, "image")
        return projected.reshape(len(images), count, -1)

    def project(self, name: str, frozen: np.ndarray, modality: str | None = None) -> np.ndarray:
        if self.model is None or len(frozen) == 0:
            return frozen
        rows = [self.model.project(name, torch.from_numpy(frozen[start:start + 8192]), modality)
                .float().cpu().numpy()
                for start in range(0, len(frozen), 8192)]
        return np.concatenate(rows)

    # -- frozen embeddings and their cache -------------------------------------------------------
    def cached(self, name: str, modality: str, inputs: Sequence[Any], ids: Sequence[str],
               patches: bool) -> np.ndarray:
        space = self.spaces[name]
        kind = f"{modality}-patches-{self.patch_mode}" if patches else modality
        path = None
        if self.cache_dir is not None:
            precision = str(getattr(space, "dtype", ""))  # fp16 GPU rows are not fp32 CPU rows
            digest = inputs_digest(inputs, ids, f"{space.name}|{kind}|{precision}")
            path = self.cache_dir / slug(space.name) / f"{slug(self.dataset)}-{kind}-{digest}"
            found = self.read_cache(path)
            if found is not None:
                return found
        matrix = self.encode(space, modality, inputs, patches)
        if path is not None:
            row_ids = [f"{i}#{p}" for i in ids for p in range(len(matrix) // max(1, len(ids)))] \
                if patches else list(ids)
            write_store(path, matrix, row_ids, space=space.name, modality=modality)
        return matrix

    @staticmethod
    def read_cache(path: Path) -> np.ndarray | None:
        if not (path / "store.json").is_file():
            return None
        try:
            store = open_store(path)
            return store.rows(0, len(store))
        except StoreError:
            return None  # a damaged cache entry is recomputed and overwritten

    def encode(self, space: Space, modality: str, inputs: Sequence[Any], patches: bool) -> np.ndarray:
        parts = []
        label = f"{space.name} {modality}{' patches' if patches else ''}"
        with tqdm(total=len(inputs), desc=label, unit="item", disable=not self.progress) as bar:
            for start in range(0, len(inputs), self.batch_size):
                chunk = list(inputs[start:start + self.batch_size])
                if patches:
                    rows = space.embed_image_patches(chunk, batch_size=self.batch_size,
                                                     mode=self.patch_mode)
                    rows = rows.reshape(-1, rows.shape[-1])
                else:
                    rows = space.embed(modality, decoded(space, modality, chunk),
                                       batch_size=self.batch_size)
                parts.append(rows.float().cpu().numpy())
                bar.update(len(chunk))
        if not parts:
            return np.zeros((0, space.dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)
