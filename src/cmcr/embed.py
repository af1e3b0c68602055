"""Files -> an embedding store, fast and resumable: ``cmcr embed`` in library form.

Files are decoded and preprocessed in data-loader worker processes while the model runs in the
main process. Batches sit on a fixed grid of item indices, so a run resumed after an interruption
computes every batch exactly as an uninterrupted run does and writes a byte-identical store. A file
that cannot be read goes to ``STORE/errors.jsonl`` (index, id, path, reason); the rest go on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from cmcr.data.atomic import atomic_write_text, read_json_records
from cmcr.errors import CmcrError, InputError, StoreError
from cmcr.data.processing import (AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS,
                              check_regular_file, read_texts, split_lines)
from cmcr.spaces.base import Preprocessor, Space
from cmcr.data.store import MANIFEST, StoreWriter, open_store, read_manifest, store_lock

ERRORS_FILE = "errors.jsonl"
RUN_FILE = "embed.json"
INPUTS_FILE = "inputs.json"  # a fingerprint of the input list, checked when a run resumes
FILE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": IMAGE_EXTENSIONS + VIDEO_EXTENSIONS,  # a video gives its frame at --frame-time
    "audio": AUDIO_EXTENSIONS + VIDEO_EXTENSIONS,  # a video gives its audio track
}


@dataclass(frozen=True)
class InputItem:
    """One thing to embed: a stable id and its source (a file path, or the text itself), and
    optional metadata its store row keeps (a label or caption a search result shows)."""

    id: str
    source: str
    meta: dict[str, Any] | None = field(default=None, compare=False)


@dataclass
class EmbedSummary:
    """What a run did: rows stored, items that failed (with reasons), where it resumed."""

    store: Path
    items: int
    rows: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    resumed_at: int = 0
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return (self.items - self.resumed_at) / self.seconds if self.seconds > 0 else 0.0


# -- listing inputs ------------------------------------------------------------------------------
def collect_inputs(path: str | Path, modality: str, *, column: str | None = None,
                   id_column: str | None = None,
                   extensions: Sequence[str] | None = None) -> list[InputItem]:
    """A directory (recursive, sorted), a .txt list of paths, one file, or (texts) a text table.
    An input that holds no items is an error: an empty store is never what was meant."""
    path = Path(path).expanduser()
    if modality == "text":
        items = [InputItem(item_id, text) for item_id, text in read_texts(path, column, id_column)]
        if not items:
            raise InputError(f"{path}: holds no items (no non-empty text in it)")
        check_unique(path, items)  # an --id-column may repeat a value
        return items
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                     for e in (extensions or FILE_EXTENSIONS.get(modality, ())))
    if path.is_dir():
        items = _directory_items(path, suffixes)
    elif not os.path.lexists(path):
        raise InputError(f"{path}: no such file or directory")
    elif path.suffix.lower() == ".txt":
        check_regular_file(path)  # a FIFO would block, a broken link would read as missing
        items = _listed_items(path)
    else:
        check_regular_file(path)
        items = [InputItem(path.name, item_source(path))]
    if not items:
        raise InputError(f"{path}: holds no items: no {modality} files found "
                         f"(extensions: {' '.join(suffixes)})")
    check_unique(path, items)
    return items


def _directory_items(root: Path, suffixes: tuple[str, ...]) -> list[InputItem]:
    """Every non-directory under ``root`` with a wanted extension, sorted by relative path.
    Links to directories are not followed (so no loop is walked forever); dangling links, link
    loops, FIFOs and devices are listed, so that they fail to load and go to errors.jsonl."""
    relative = []
    for folder, _, names in os.walk(root):
        for name in names:
            if Path(name).suffix.lower() in suffixes:
                relative.append((Path(folder) / name).relative_to(root).as_posix())
    return [InputItem(rel, item_source(root / rel)) for rel in sorted(relative)]


def item_source(path: Path) -> str:
    """The absolute path an item is read from, links resolved; a missing file, dangling link or
    link loop keeps its own name, so that reading it says what is wrong with it."""
    try:
        return str(path.resolve(strict=True))
    except (OSError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
        return os.path.join(os.path.realpath(path.parent), path.name)


def _listed_items(listing: Path) -> list[InputItem]:
    """One path per line (relative to the list's folder); blank lines and '#' comments skipped."""
    try:
        lines = split_lines(listing.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{listing}: cannot read the file list ({err})") from None
    items = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            items.append(InputItem(entry, item_source(listing.parent / Path(entry).expanduser())))
    return items


def check_unique(path: Path, items: list[InputItem]) -> None:
    """Refuse an input list that names one id twice (a store's ids must be unique)."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"{path}: '{item.id}' is listed twice; ids must be unique")
        seen.add(item.id)


# -- decoding in workers -------------------------------------------------------------------------
class ItemDataset(torch.utils.data.Dataset):
    """Item i -> (i, decoded item or None, error reason or None); never raises for a bad file."""

    def __init__(self, items: Sequence[InputItem], preprocessor: Preprocessor, modality: str):
        self.items = list(items)
        self.preprocessor = preprocessor
        self.is_text = modality == "text"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        item = self.items[index]
        try:
            source = item.source if self.is_text else Path(item.source)
            return index, self.preprocessor.prepare(source), None
        except CmcrError as err:
            return index, None, str(err)
        except Exception as err:  # a decoder's own failure must not stop the other files
            return index, None, f"{item.source}: {type(err).__name__}: {err}"


@dataclass
class Batch:
    indices: list[int]
    inputs: dict[str, torch.Tensor] | None
    errors: list[tuple[int, str]]
    rows: np.ndarray | None = None  # already encoded (by cmcr.distributed's actors), else None


# start (the first item not yet stored) -> the grid batches from the one holding it, in order
BatchSource = Callable[[int], Iterable[Batch]]


class Collate:
    """Decoded items -> one model batch; an item the preprocessor rejects becomes an error."""

    def __init__(self, preprocessor: Preprocessor):
        self.preprocessor = preprocessor

    def __call__(self, samples: list[tuple[int, Any, str | None]]) -> Batch:
        errors = [(index, reason) for index, _, reason in samples if reason is not None]
        good = [(index, item) for index, item, reason in samples if reason is None]
        try:
            return Batch([i for i, _ in good], self._collate(good), errors)
        except Exception:
            pass
        kept = []
        for index, item in good:  # find the culprit(s), keep the rest
            try:
                self.preprocessor.collate([item])
                kept.append((index, item))
            except Exception as err:
                errors.append((index, f"cannot preprocess: {type(err).__name__}: {err}"))
        return Batch([i for i, _ in kept], self._collate(kept), sorted(errors))

    def _collate(self, good: list[tuple[int, Any]]) -> dict[str, torch.Tensor] | None:
        return self.preprocessor.collate([item for _, item in good]) if good else None


def grid_batches(start: int, count: int, batch_size: int) -> list[list[int]]:
    """Batches of item indices on the fixed grid [k*b, (k+1)*b), from the one holding ``start``."""
    first = (start // batch_size) * batch_size
    return [list(range(lo, min(lo + batch_size, count))) for lo in range(first, count, batch_size)]


def default_workers() -> int:
    """Decoding processes: one core less than this process may use (at most 8); each worker
    runs one torch thread (torch sets that in every data-loader worker)."""
    from cmcr.runtime.threads import usable_cores

    return max(0, min(8, usable_cores() - 1))


def make_loader(dataset: ItemDataset, batches: list[list[int]], collate: Collate, workers: int,
                pin_memory: bool) -> torch.utils.data.DataLoader:
    if workers > 0:  # the fast tokenizers warn (and may deadlock) when forked after use
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
        pin_memory=pin_memory, prefetch_factor=4 if workers > 0 else None)


# -- resuming ------------------------------------------------------------------------------------
def resume_point(out: Path, items: Sequence[InputItem]) -> int:
    """Index of the first item not yet safely stored (0 for a new store)."""
    if not (out / MANIFEST).is_file() or read_manifest(out / MANIFEST).complete:
        return 0
    ids = open_store(out).ids
    if not ids:
        return 0
    position = {item.id: index for index, item in enumerate(items)}
    if ids[-1] not in position:
        raise StoreError(f"{out}: the interrupted run stored '{ids[-1]}', which is not among the "
                         "inputs now; the inputs changed: re-run with --overwrite")
    return position[ids[-1]] + 1


def read_errors(out: Path) -> list[dict[str, Any]]:
    """The records of ``errors.jsonl``. A last line cut short (a full disk, a kill) is dropped:
    its item was not stored either, so the resumed run tries it again."""
    path = out / ERRORS_FILE
    if not path.is_file():
        return []
    return read_json_records(path, StoreError, "delete the line (or the file, to retry every "
                             "failed item) and re-run")


def error_line(record: dict[str, Any]) -> str:
    """One errors.jsonl line. ASCII escapes keep names that are not UTF-8 (which Python holds as
    lone surrogates) writable, and read back to the same path."""
    return json.dumps(record) + "\n"


def _rewrite_errors(out: Path, errors: list[dict[str, Any]]) -> None:
    atomic_write_text(out / ERRORS_FILE, "".join(error_line(e) for e in errors))


# -- the run -------------------------------------------------------------------------------------
def inputs_fingerprint(items: Sequence[InputItem]) -> dict[str, Any]:
    """What identifies an input list: its length and a digest of its ids and sources, in order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.source]).encode("utf-8", "surrogatepass") + b"\n")
    return {"count": len(items), "sha256": digest.hexdigest()}


def check_same_inputs(out: Path, items: Sequence[InputItem], stored_ids: list[str]) -> None:
    """Refuse to resume when the input list changed since the interrupted run, saying how."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return  # a store made before fingerprints were kept
    recorded = json.loads(path.read_text(encoding="utf-8"))
    current = inputs_fingerprint(items)
    if recorded == current:
        return
    now = {item.id for item in items}
    gone = [item_id for item_id in stored_ids if item_id not in now]
    detail = f"; stored items no longer listed: {len(gone)} (e.g. {gone[0]!r})" if gone else ""
    raise StoreError(f"{out}: the inputs changed since the interrupted run ({recorded['count']} "
                     f"items then, {current['count']} now{detail}); resuming would silently miss "
                     "or misplace items: re-run with --overwrite to embed the new list from the "
                     "start")


def embed_items(space: Space, modality: str, items: Sequence[InputItem], out: str | Path, *,
                batch_size: int = 64, workers: int | None = None, shard_rows: int = 65536,
                store_dtype: str = "float32", overwrite: bool = False, progress: bool = True,
                on_batch: Callable[[int], None] | None = None,
                label: str | None = None, batches: BatchSource | None = None) -> EmbedSummary:
    """Embed ``items`` into the store ``out``, resuming an interrupted run of the same inputs
    (refused if the input list changed), holding an exclusive lock on ``out`` meanwhile.

    ``on_batch(k)`` is called after batch k is handed to the store (for progress hooks and tests).
    ``batches`` replaces the local data loader (cmcr.distributed: batches encoded on Ray).
    """
    modality = space.check_modality(modality)
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    out = Path(out).expanduser()
    with store_lock(out):
        return _embed_locked(space, modality, items, out, batch_size, workers, shard_rows,
                             store_dtype, overwrite, progress, on_batch, label, batches)


def _embed_locked(space: Space, modality: str, items: Sequence[InputItem], out: Path,
                  batch_size: int, workers: int | None, shard_rows: int, store_dtype: str,
                  overwrite: bool, progress: bool, on_batch: Callable[[int], None] | None,
                  label: str | None, batches: BatchSource | None = None) -> EmbedSummary:
    from tqdm.auto import tqdm

    from cmcr.spaces.registry import weights_sha256

    writer = StoreWriter(out, dim=space.dim, space=space.name, modality=modality,
                         dtype=store_dtype, normalized=True, shard_rows=shard_rows,
                         overwrite=overwrite, space_sha256=weights_sha256(space.name))
    if writer.num_rows:
        check_same_inputs(out, items, open_store(out).ids)
    else:
        (out / INPUTS_FILE).write_text(json.dumps(inputs_fingerprint(items)) + "\n", encoding="utf-8")
    start = resume_point(out, items) if writer.num_rows else 0
    errors = [e for e in read_errors(out) if e["index"] < start] if start else []
    _rewrite_errors(out, errors)
    loader = (batches(start) if batches is not None
              else _local_batches(space, modality, items, start, batch_size, workers))
    began = time.perf_counter()
    bar = tqdm(total=len(items), initial=start, unit="item", disable=not progress,
               desc=label or f"embed {modality} ({space.name.rpartition('/')[2]})",
               dynamic_ncols=True)
    with full_disk_stops_cleanly(out, writer), bar, \
            open(out / ERRORS_FILE, "a", encoding="utf-8") as error_log:
        for number, batch in enumerate(loader):
            _store_batch(space, modality, batch, items, start, writer, error_log, errors)
            bar.update(sum(1 for i in batch.indices + [e for e, _ in batch.errors] if i >= start))
            bar.set_postfix(errors=len(errors))
            if on_batch is not None:
                on_batch(number)
        store = writer.close()
    summary = EmbedSummary(out, len(items), len(store), errors, start, time.perf_counter() - began)
    _write_run_file(out, space, modality, summary)
    return summary


def _local_batches(space: Space, modality: str, items: Sequence[InputItem], start: int,
                   batch_size: int, workers: int | None) -> Iterable[Batch]:
    """Grid batches decoded in this machine's data-loader workers (not yet encoded)."""
    preprocessor = space.preprocessor(modality)
    workers = default_workers() if workers is None else workers
    return make_loader(ItemDataset(items, preprocessor, modality),
                       grid_batches(start, len(items), batch_size), Collate(preprocessor), workers,
                       pin_memory=getattr(getattr(space, "device", None), "type", "") == "cuda")


@contextlib.contextmanager
def full_disk_stops_cleanly(out: Path, writer: StoreWriter) -> Iterator[None]:
    """A full disk (or quota) ends the run with a message and the store's finished shards kept
    as the resume point (every store file is written by cmcr.data.atomic, which removes its
    temporary when a write fails)."""
    try:
        yield
    except OSError as err:
        if not _disk_full(err, out):
            raise
        raise StoreError(f"{out}: the disk is full (writing {err.filename or 'the store'}); "
                         f"{writer.num_rows} rows are safely stored: free some space and re-run "
                         "the same command to resume") from None


def _disk_full(err: OSError, out: Path) -> bool:
    """ENOSPC/EDQUOT, or a short write without an errno (numpy reports "4096 requested and 2016
    written") on a file system with under 1 MiB left."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return err.errno is None and shutil.disk_usage(out).free < 2**20
    except OSError:
        return False


def _store_batch(space: Space, modality: str, batch: Batch, items: Sequence[InputItem], start: int,
                 writer: StoreWriter, error_log: Any, errors: list[dict[str, Any]]) -> None:
    """Record the batch's errors, then its rows; items before ``start`` are already stored."""
    for index, reason in batch.errors:
        if index >= start:
            record = {"index": index, "id": items[index].id, "path": items[index].source,
                      "reason": reason}
            errors.append(record)
            error_log.write(error_line(record))
    error_log.flush()
    if batch.inputs is None and batch.rows is None:
        return
    rows = batch.rows if batch.rows is not None else space.encode(modality, batch.inputs).numpy()
    keep = np.array([index >= start for index in batch.indices])
    if keep.any():
        kept = [items[i] for i, k in zip(batch.indices, keep) if k]
        writer.append(rows[keep], [item.id for item in kept],
                      [row_metadata(modality, item) for item in kept])


def row_metadata(modality: str, item: InputItem) -> dict[str, str]:
    """What a store row records of its input: the text itself, or the file's absolute path
    (what a search index shows and serves)."""
    extra = dict(item.meta or {})
    if modality == "text":
        return {"text": item.source, **extra}
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", item.source):  # a URI (cmcr embed --ray): as given
        return {"source": item.source, **extra}
    return {"source": os.path.abspath(item.source), **extra}


def _write_run_file(out: Path, space: Space, modality: str, summary: EmbedSummary) -> None:
    from cmcr.version import __version__

    record = {"space": space.name, "modality": modality, "items": summary.items,
              "rows": summary.rows, "errors": len(summary.errors), "cmcr_version": __version__}
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
