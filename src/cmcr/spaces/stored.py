"""A precomputed space: embeddings a user brings as stores (e.g. ULIP-2 point clouds).

``precomputed:DIR`` where DIR is one store (its manifest names the modality) or a folder of stores,
one per modality (the manifest's modality, else the sub-folder's name). Items are looked up by id:
the exact id, else a path's file name or stem when that is unique.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cmcr.errors import ConfigError, InputError
from cmcr.spaces.base import Preprocessor, Space, unit_rows
from cmcr.data.store import MANIFEST, EmbeddingStore, open_store


class StoreLookup(Preprocessor):
    """Ids -> rows of one store. Picklable: the memory map is reopened in each worker."""

    def __init__(self, path: Path):
        self.path = path
        self._store: EmbeddingStore | None = None
        self._index: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_store": None, "_index": None}

    @property
    def store(self) -> EmbeddingStore:
        if self._store is None:
            self._store = open_store(self.path)
        return self._store

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            ids = self.store.ids
            self._index = {item_id: row for row, item_id in enumerate(ids)}
            for key in ("name", "stem"):  # unique file names and stems work as ids too
                names: dict[str, list[int]] = {}
                for row, item_id in enumerate(ids):
                    names.setdefault(getattr(Path(item_id), key), []).append(row)
                for name, rows in names.items():
                    if len(rows) == 1:
                        self._index.setdefault(name, rows[0])
        return self._index

    def row_of(self, item: Any) -> int:
        text = str(item)
        for key in (text, Path(text).name, Path(text).stem):
            if key in self.index:
                return self.index[key]
        raise InputError(f"{self.path}: no item with id '{text}' (first ids: {self.store.ids[:3]})")

    def load(self, path: Path) -> int:
        return self.row_of(path)

    def prepare(self, item: Any) -> int:
        return self.row_of(item)

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        return {"rows": torch.from_numpy(self.store.take(np.asarray(items, dtype=np.int64)))}


def find_stores(path: Path) -> dict[str, Path]:
    """Modality -> store directory, for one store or a folder of stores."""
    if (path / MANIFEST).is_file() or path.suffix == ".npy":
        store = open_store(path)
        return {store.modality or path.stem: path}
    if not path.is_dir():
        raise ConfigError(f"{path}: precomputed space not found (a store, or a folder of stores)")
    stores = {}
    for child in sorted(path.iterdir()):
        if (child / MANIFEST).is_file():
            stores[open_store(child).modality or child.name] = child
    if not stores:
        raise ConfigError(f"{path}: no embedding stores inside (expected sub-folders with {MANIFEST})")
    return stores


class StoredSpace(Space):
    """Embeddings looked up from stores; ``embed(modality, ids)`` returns their unit rows."""

    kind = "precomputed"

    def __init__(self, path: str | Path, *, name: str | None = None, **_: Any):
        self.path = Path(path).expanduser()
        self.name = name or f"{self.kind}:{path}"
        self._stores = find_stores(self.path)
        self.modalities = tuple(self._stores)
        dims = {open_store(p).dim for p in self._stores.values()}
        if len(dims) != 1:
            raise ConfigError(f"{self.path}: stores of one space must share a width, got {sorted(dims)}")
        self._dim = dims.pop()

    @property
    def dim(self) -> int:
        return self._dim

    def preprocessor(self, modality: str) -> Preprocessor:
        return StoreLookup(self._stores[self.check_modality(modality)])

    def encode(self, modality: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return unit_rows(inputs["rows"])
