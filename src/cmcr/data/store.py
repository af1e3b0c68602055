"""Embedding stores: one collection of embeddings (one space, one modality) on disk.

A store is a directory::

    store.json          manifest: space, modality, dim, dtype, normalized, rows, shards, complete
    shard-00000.npy     (rows, dim) float16/float32 matrix, read memory-mapped
    ids-00000.jsonl     one JSON string per row: the row's stable id
    meta-00000.jsonl    optional: one JSON object per row

Shards hold exactly ``shard_rows`` rows (the last may hold fewer), so a writer that resumes after an
interruption produces byte-identical files to an uninterrupted run. Everywhere a store is accepted,
a plain ``.npy`` matrix is accepted too (ids are then the row numbers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cmcr.data.atomic import atomic_file, atomic_write_text
from cmcr.errors import StoreError
from cmcr.data.folders import LOCK_FILE, make_directory, store_lock  # noqa: F401 (re-exported)

MANIFEST = "store.json"
FORMAT_NAME = "cmcr-store"
FORMAT_VERSION = 1
SUPPORTED_DTYPES = ("float16", "float32")


@dataclass
class StoreInfo:
    """What a store's manifest records."""

    space: str | None
    modality: str | None
    dim: int
    dtype: str
    normalized: bool | None  # None: unknown (a plain .npy)
    num_rows: int
    shard_rows: int
    shards: list[dict[str, Any]]
    complete: bool = True
    has_metadata: bool = False
    space_sha256: str | None = None  # the sha256 of the space's weights, when they were at hand

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **self.__dict__}


def _shard_name(kind: str, index: int, suffix: str) -> str:
    return f"{kind}-{index:05d}.{suffix}"


def _atomic_save_npy(path: Path, matrix: np.ndarray) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, matrix)


class EmbeddingStore:
    """Read-only, memory-mapped view of a store (or a plain ``.npy`` matrix)."""

    def __init__(self, path: Path, info: StoreInfo, shards: list[np.ndarray]):
        self.path = path
        self.info = info
        self._shards = shards
        self._starts = np.cumsum([0] + [len(s) for s in shards])
        self._ids: list[str] | None = None

    # -- shape -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def space(self) -> str | None:
        return self.info.space

    @property
    def modality(self) -> str | None:
        return self.info.modality

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.path)!r}, rows={len(self)}, dim={self.dim}, "
                f"space={self.space!r}, modality={self.modality!r})")

    # -- rows --------------------------------------------------------------------------------
    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a float32 array (copied out of the memory map)."""
        start, stop = max(0, start), min(len(self), stop)
        parts = []
        for index, shard in enumerate(self._shards):
            lo, hi = int(self._starts[index]), int(self._starts[index + 1])
            if hi <= start or lo >= stop:
                continue
            parts.append(shard[max(start, lo) - lo: min(stop, hi) - lo])
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def take(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Rows at ``indices`` (any order) as a float32 array."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self._starts, indices, side="right") - 1
        for index in np.unique(shard_of):
            mask = shard_of == index
            local = indices[mask] - self._starts[index]
            order = np.argsort(local, kind="stable")  # sorted reads are kinder to the disk
            gathered = self._shards[index][local[order]]
            out_rows = np.flatnonzero(mask)[order]
            out[out_rows] = gathered
        return out

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, float32 rows) in order, ``chunk_rows`` rows at a time."""
        for start in range(0, len(self), chunk_rows):
            yield start, self.rows(start, start + chunk_rows)

    def iter_labelled_chunks(self, chunk_rows: int
                             ) -> Iterator[tuple[int, np.ndarray, list[str], list[dict] | None]]:
        """Yield (start, float32 rows, their ids, their metadata or None), one shard's ids and
        metadata in RAM at a time (for streaming over stores too large for RAM)."""
        for index, shard in enumerate(self.info.shards):
            first, last = int(self._starts[index]), int(self._starts[index + 1])
            ids = (_read_jsonl(self.path / shard["ids"]) if "ids" in shard and self.path.is_dir()
                   else [str(i) for i in range(first, last)])
            meta = _read_jsonl(self.path / shard["meta"]) if self.info.has_metadata else None
            if len(ids) != last - first or (meta is not None and len(meta) != last - first):
                raise StoreError(f"{self.path}: shard {index} holds {last - first} rows but "
                                 f"{len(ids)} ids / {len(meta or ids)} metadata rows")
            for start in range(first, last, chunk_rows):
                stop = min(last, start + chunk_rows)
                yield (start, self.rows(start, stop), ids[start - first:stop - first],
                       None if meta is None else meta[start - first:stop - first])

    def to_numpy(self) -> np.ndarray:
        """All rows in RAM as float32 (only for stores that fit)."""
        return self.rows(0, len(self))

    # -- ids and metadata ----------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self._read_ids()
        return self._ids

    def _read_ids(self) -> list[str]:
        if self.path.suffix == ".npy" or any("ids" not in s for s in self.info.shards):
            return [str(i) for i in range(len(self))]  # plain matrices: ids are row numbers
        ids: list[str] = []
        for shard in self.info.shards:
            ids.extend(_read_shard_rows(self.path / shard["ids"], shard["rows"], "ids"))
        _check_unique_ids(self.path, ids)
        return ids

    def metadata(self) -> list[dict[str, Any]] | None:
        if not self.info.has_metadata:
            return None
        rows: list[dict[str, Any]] = []
        for shard in self.info.shards:
            rows.extend(_read_shard_rows(self.path / shard["meta"], shard["rows"], "metadata"))
        return rows

    # -- checks --------------------------------------------------------------------------------
    def first_nonfinite_row(self, chunk_rows: int = 65536) -> int | None:
        """Index of the first row holding NaN or inf, or None."""
        for start, block in self.iter_chunks(chunk_rows):
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                return start + int(np.flatnonzero(bad)[0])
        return None

    def describe(self) -> dict[str, Any]:
        """A summary for ``cmcr store info``."""
        sample = self.rows(0, min(len(self), 1024))
        norms = np.linalg.norm(sample, axis=1) if len(sample) else np.zeros(0)
        return {
            "path": str(self.path),
            "space": self.space,
            "modality": self.modality,
            "rows": len(self),
            "dim": self.dim,
            "dtype": self.info.dtype,
            "normalized": self.info.normalized,
            "shards": len(self._shards),
            "complete": self.info.complete,
            "metadata": self.info.has_metadata,
            "sample_norm_mean": float(norms.mean()) if len(norms) else None,
            "first_ids": self.ids[:3],
        }


def _read_jsonl(path: Path) -> list[Any]:
    """Every non-blank line's JSON value (parsed as one array: 10x faster on a million ids;
    line by line only to name a bad line)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line for line in handle.read().split("\n") if line.strip()]
        try:
            values = json.loads("[" + ",".join(lines) + "]")
            if len(values) == len(lines):
                return values
        except (ValueError, RecursionError):
            pass
        return [json.loads(line) for line in lines]
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise StoreError(f"{path}: cannot read store file: {err}") from None
    except RecursionError:
        raise StoreError(f"{path}: cannot read store file: values nested too deeply") from None


def _read_shard_rows(path: Path, expected: int, what: str) -> list[Any]:
    """A shard's ids or metadata file, which must hold one line per row of its shard."""
    rows = _read_jsonl(path)
    kind = str if what == "ids" else dict
    wrong = next((n for n, row in enumerate(rows, 1) if not isinstance(row, kind)), None)
    if wrong is not None:
        raise StoreError(f"{path}, line {wrong}: expected a JSON {'string' if kind is str else 'object'}"
                         f", got {type(rows[wrong - 1]).__name__}")
    if len(rows) != expected:
        raise StoreError(f"{path}: holds {len(rows)} {what} lines, its shard has {expected} rows; "
                         "the store is damaged: re-embed it (--overwrite)")
    return rows


def _check_unique_ids(path: Path, ids: list[str]) -> None:
    if len(set(ids)) == len(ids):
        return
    first: dict[str, int] = {}
    for row, item_id in enumerate(ids):
        if item_id in first:
            raise StoreError(f"{path}: id {shown_id(item_id)} is used by rows {first[item_id]} "
                             f"and {row}; ids in a store must be unique")
        first[item_id] = row


def shown_id(item_id: Any) -> str:
    """An id as a message shows it: quoted, bounded."""
    text = repr(item_id)
    return text if len(text) <= 80 else text[:77] + "..."


def _load_matrix(path: Path) -> np.ndarray:
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise StoreError(f"{path}: file not found") from None
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: not a readable .npy matrix ({err})") from None
    if matrix.ndim != 2:
        raise StoreError(f"{path}: expected a 2-D (rows, dim) matrix, got shape {matrix.shape}")
    if matrix.dtype.kind != "f":
        raise StoreError(f"{path}: expected a float matrix, got dtype {matrix.dtype}")
    return matrix


def open_store(path: str | Path) -> EmbeddingStore:
    """Open a store directory or a plain ``.npy`` matrix, memory-mapped."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".npy":
        matrix = _load_matrix(path)
        info = StoreInfo(space=None, modality=None, dim=int(matrix.shape[1]), dtype=str(matrix.dtype),
                         normalized=None, num_rows=len(matrix), shard_rows=len(matrix),
                         shards=[{"file": path.name, "rows": len(matrix)}])
        return EmbeddingStore(path, info, [matrix])
    manifest = path / MANIFEST
    if not path.exists():
        raise StoreError(f"{path}: no such store (expected a store directory or a .npy file)")
    if not manifest.is_file():
        raise StoreError(f"{path}: not an embedding store: no {MANIFEST} inside, and not a .npy file")
    info = read_manifest(manifest)
    shards = []
    for shard in info.shards:
        matrix = _load_matrix(path / shard["file"])
        if matrix.shape != (shard["rows"], info.dim):
            raise StoreError(f"{path / shard['file']}: shape {matrix.shape} does not match "
                             f"{MANIFEST} ({shard['rows']}, {info.dim})")
        shards.append(matrix)
    return EmbeddingStore(path, info, shards)


def read_manifest(manifest: Path) -> StoreInfo:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON or not UTF-8
        raise StoreError(f"{manifest}: unreadable manifest: {err}") from None
    except RecursionError:
        raise StoreError(f"{manifest}: unreadable manifest: values nested too deeply") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise StoreError(f"{manifest}: not a cmcr store manifest (format != {FORMAT_NAME!r})")
    data.pop("format")
    version = data.pop("version", None)
    if version != FORMAT_VERSION:
        raise StoreError(f"{manifest}: store format version {version} is not supported "
                         f"(this cmcr reads version {FORMAT_VERSION})")
    try:
        info = StoreInfo(**data)
    except TypeError as err:
        raise StoreError(f"{manifest}: malformed manifest: {err}") from None
    check_manifest(info, manifest)
    return info


def _plain_file_name(name: Any) -> bool:
    """A file name inside the store folder: no folder part, not '.', '..' or empty."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\x00" not in name)


def check_manifest(info: StoreInfo, manifest: Path) -> None:
    """Refuse a manifest whose fields have the wrong types, or whose files are not plain names
    inside the store folder (``../x.npy`` or ``/etc/hostname`` would read outside it)."""
    def is_count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not (is_count(info.dim) and info.dim > 0):
        raise StoreError(f"{manifest}: 'dim' must be a positive integer, got {info.dim!r:.40}")
    if info.dtype not in SUPPORTED_DTYPES:
        raise StoreError(f"{manifest}: 'dtype' must be one of {SUPPORTED_DTYPES}, got {info.dtype!r:.40}")
    if not is_count(info.num_rows) or not (is_count(info.shard_rows) and info.shard_rows > 0):
        raise StoreError(f"{manifest}: 'num_rows' and 'shard_rows' must be whole numbers")
    if not isinstance(info.shards, list):
        raise StoreError(f"{manifest}: 'shards' must be a list, got {type(info.shards).__name__}")
    for index, shard in enumerate(info.shards):
        if not isinstance(shard, dict) or "file" not in shard or not is_count(shard.get("rows")):
            raise StoreError(f"{manifest}: shard {index} must name its 'file' and its 'rows'")
        for key in ("file", "ids", "meta"):
            if key in shard and not _plain_file_name(shard[key]):
                raise StoreError(f"{manifest}: shard {index} '{key}' is {str(shard[key])[:80]!r}: "
                                 "store files must be plain names inside the store folder")
    for key in ("space", "modality", "space_sha256"):
        if getattr(info, key) is not None and not isinstance(getattr(info, key), str):
            raise StoreError(f"{manifest}: '{key}' must be a string, got "
                             f"{type(getattr(info, key)).__name__}")
    if sum(shard["rows"] for shard in info.shards) != info.num_rows:
        raise StoreError(f"{manifest}: the shards hold {sum(s['rows'] for s in info.shards)} rows, "
                         f"'num_rows' says {info.num_rows}")


class StoreWriter:
    """Append rows to a store, shard by shard; re-opening an incomplete store resumes it.

    Only whole shards reach the disk before :meth:`close`, so after an interruption
    ``writer.num_rows`` tells the caller where to restart, and the result is identical to an
    uninterrupted run.
    """

    def __init__(self, path: str | Path, *, dim: int, space: str | None = None,
                 modality: str | None = None, dtype: str = "float32",
                 normalized: bool | None = None, shard_rows: int = 65536,
                 overwrite: bool = False, space_sha256: str | None = None):
        if dtype not in SUPPORTED_DTYPES:
            raise StoreError(f"{path}: dtype must be one of {SUPPORTED_DTYPES}, got {dtype!r}")
        if shard_rows < 1:
            raise StoreError(f"{path}: shard_rows must be positive, got {shard_rows}")
        self.path = Path(path)
        self.info = StoreInfo(space=space, modality=modality, dim=int(dim), dtype=dtype,
                              normalized=normalized, num_rows=0, shard_rows=shard_rows, shards=[],
                              complete=False, has_metadata=False, space_sha256=space_sha256)
        self._pending: list[np.ndarray] = []
        self._pending_ids: list[str] = []
        self._pending_meta: list[dict[str, Any]] = []
        self._open(overwrite)

    def _open(self, overwrite: bool) -> None:
        manifest = self.path / MANIFEST
        if manifest.exists() and not overwrite:
            existing = read_manifest(manifest)
            if existing.complete:
                raise StoreError(f"{self.path}: store is already complete; pass overwrite=True "
                                 "(--overwrite) to replace it")
            for key in ("dim", "dtype", "space", "modality", "shard_rows"):
                if getattr(existing, key) != getattr(self.info, key):
                    raise StoreError(
                        f"{self.path}: cannot resume: existing store has {key}="
                        f"{getattr(existing, key)!r}, this run asks for {getattr(self.info, key)!r}")
            self.info = existing
            return
        if self.path.exists() and overwrite:
            self._remove_listed_files(manifest)
        make_directory(self.path)
        self._write_manifest()

    def _remove_listed_files(self, manifest: Path) -> None:
        """For overwrite: delete only the files the old manifest lists; a non-empty folder that
        holds no store is refused, so a mistyped --out never deletes a user's files."""
        if not manifest.exists():
            if self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
                raise StoreError(f"{self.path}: not a store (no {MANIFEST}) and not empty: refusing "
                                 "to overwrite it; choose an empty or new folder")
            return
        existing = read_manifest(manifest)
        for shard in existing.shards:
            for key in ("file", "ids", "meta"):
                if key in shard:
                    (self.path / shard[key]).unlink(missing_ok=True)
        manifest.unlink()

    @property
    def num_rows(self) -> int:
        """Rows safely on disk (where a resumed run should restart)."""
        return self.info.num_rows

    @property
    def num_pending(self) -> int:
        return sum(len(m) for m in self._pending)

    def append(self, matrix: np.ndarray, ids: Sequence[str],
               metadata: Sequence[dict[str, Any]] | None = None) -> None:
        """Buffer rows; every full shard is written to disk at once."""
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[1] != self.info.dim:
            raise StoreError(f"{self.path}: rows must have shape (n, {self.info.dim}), "
                             f"got {matrix.shape}")
        if len(ids) != len(matrix):
            raise StoreError(f"{self.path}: {len(matrix)} rows but {len(ids)} ids")
        if metadata is not None:
            if len(metadata) != len(matrix):
                raise StoreError(f"{self.path}: {len(matrix)} rows but {len(metadata)} metadata rows")
            if self.info.num_rows == 0 and not self._pending:
                self.info.has_metadata = True
            if self.info.has_metadata:  # a store begun without metadata (resumed) stays without
                self._pending_meta.extend(metadata)
        if self.info.has_metadata and metadata is None:
            raise StoreError(f"{self.path}: this store records metadata: pass it for every row")
        self._pending.append(matrix.astype(self.info.dtype, copy=False))
        self._pending_ids.extend(str(i) for i in ids)
        while self.num_pending >= self.info.shard_rows:
            self._flush(self.info.shard_rows)

    def _flush(self, count: int) -> None:
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        shard, rest = block[:count], block[count:]
        self._pending = [rest] if len(rest) else []
        ids, self._pending_ids = self._pending_ids[:count], self._pending_ids[count:]
        index = len(self.info.shards)
        entry = {"file": _shard_name("shard", index, "npy"), "rows": int(count),
                 "ids": _shard_name("ids", index, "jsonl")}
        _atomic_save_npy(self.path / entry["file"], np.ascontiguousarray(shard))
        atomic_write_text(self.path / entry["ids"], "".join(json.dumps(i) + "\n" for i in ids))
        if self.info.has_metadata:
            meta, self._pending_meta = self._pending_meta[:count], self._pending_meta[count:]
            entry["meta"] = _shard_name("meta", index, "jsonl")
            atomic_write_text(self.path / entry["meta"],
                               "".join(json.dumps(m, sort_keys=True) + "\n" for m in meta))
        self.info.shards.append(entry)
        self.info.num_rows += int(count)
        self._write_manifest()

    def _write_manifest(self) -> None:
        atomic_write_text(self.path / MANIFEST, json.dumps(self.info.to_json(), indent=2) + "\n")

    def close(self) -> EmbeddingStore:
        """Write the last partial shard, mark the store complete and open it for reading."""
        if self.num_pending:
            self._flush(self.num_pending)
        self.info.complete = True
        self._write_manifest()
        return open_store(self.path)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()


def write_store(path: str | Path, matrix: np.ndarray, ids: Sequence[str] | None = None, *,
                space: str | None = None, modality: str | None = None, dtype: str = "float32",
                normalized: bool | None = None, metadata: Sequence[dict[str, Any]] | None = None,
                shard_rows: int = 65536, overwrite: bool = True) -> EmbeddingStore:
    """Write a whole in-RAM matrix as a store (``normalized`` is measured when not given)."""
    matrix = np.asarray(matrix)
    if normalized is None and len(matrix):
        norms = np.linalg.norm(matrix.astype(np.float32), axis=1)
        normalized = bool(np.allclose(norms, 1.0, atol=1e-2 if dtype == "float16" else 1e-4))
    ids = [str(i) for i in range(len(matrix))] if ids is None else ids
    writer = StoreWriter(path, dim=matrix.shape[1], space=space, modality=modality, dtype=dtype,
                         normalized=normalized, shard_rows=shard_rows, overwrite=overwrite)
    writer.append(matrix, ids, metadata)
    return writer.close()
