"""Per-row strings of an index (ids, source paths, texts) as memory-mapped tables.

A table is two files: ``NAME.offsets.npy`` (n + 1 int64 byte offsets) and ``NAME.bin`` (the UTF-8
strings back to back). Row i is ``bin[offsets[i]:offsets[i + 1]]``: opening costs nothing, a
lookup reads one string, and a 1M-row table is written while streaming, never held as a list.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from cmcr.errors import StoreError


class StringTableWriter:
    """Append strings to ``NAME.bin``; :meth:`close` writes ``NAME.offsets.npy``."""

    def __init__(self, stem: Path):
        self.stem = Path(stem)
        self._data = open(self._file(".bin.tmp"), "wb")
        self._offsets = [0]

    def _file(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    def extend(self, strings: Iterable[str]) -> None:
        for text in strings:
            encoded = text.encode("utf-8")
            self._data.write(encoded)
            self._offsets.append(self._offsets[-1] + len(encoded))

    def close(self) -> None:
        self._data.close()
        os.replace(self._file(".bin.tmp"), self._file(".bin"))
        offsets_tmp = self._file(".offsets.tmp")
        with open(offsets_tmp, "wb") as handle:
            np.save(handle, np.asarray(self._offsets, dtype=np.int64))
        os.replace(offsets_tmp, self._file(".offsets.npy"))


class StringTable:
    """Read-only, memory-mapped strings written by :class:`StringTableWriter`."""

    def __init__(self, stem: Path):
        self.stem = Path(stem)
        try:
            self._offsets = np.load(self._file(".offsets.npy"), mmap_mode="r",
                                    allow_pickle=False)
            size = self._file(".bin").stat().st_size
            self._data = (np.memmap(self._file(".bin"), dtype=np.uint8, mode="r")
                          if size else np.zeros(0, dtype=np.uint8))
        except (OSError, ValueError) as err:
            raise StoreError(f"{self.stem}: unreadable index table ({err})") from None
        if self._offsets.ndim != 1 or len(self._offsets) == 0 or int(self._offsets[-1]) != size:
            raise StoreError(f"{self.stem}: index table is damaged (offsets do not match the data)")

    def _file(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, row: int) -> str:
        if not 0 <= row < len(self):
            raise IndexError(row)
        start, stop = int(self._offsets[row]), int(self._offsets[row + 1])
        return bytes(self._data[start:stop]).decode("utf-8")
