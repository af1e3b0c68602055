"""Files -> an embedding store, fast and resumable: ``cmcr embed`` in library form.

Files are decoded and preprocessed in data-loader worker processes while the model runs in the
main process. Batches sit on a fixed grid of item indices, so a run resumed after an interruption
computes every batch exactly as an uninterrupted run does and writes a byte-identical store. A file
that cannot be read goes to ``STORE/errors.jsonl`` (index, id, path, reason); the rest go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cmcr.errors import CmcrError, InputError, StoreError
from cmcr.processing import (AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, read_texts)
from cmcr.spaces.base import Preprocessor, Space
from cmcr.store import MANIFEST, StoreWriter, open_store, read_manifest, store_lock

ERRORS_FILE = "errors.jsonl"
RUN_FILE = "embed.json"
INPUTS_FILE = "inputs.json"  # a fingerprint of the input list, checked when a run resumes
FILE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": IMAGE_EXTENSIONS + VIDEO_EXTENSIONS,  # a video gives its frame at --frame-time
    "audio": AUDIO_EXTENSIONS + VIDEO_EXTENSIONS,  # a video gives its audio track
}


@dataclass(frozen=True)
class InputItem:
    """One thing to embed: a stable id and its source (a file path, or the text itself)."""

    id: str
    source: str


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
    """A directory (recursive, sorted), a .txt list of paths, one file, or (texts) a text table."""
    path = Path(path).expanduser()
    if modality == "text":
        return [InputItem(item_id, text) for item_id, text in read_texts(path, column, id_column)]
    suffixes = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                     for e in (extensions or FILE_EXTENSIONS.get(modality, ())))
    if path.is_dir():
        items = _directory_items(path, suffixes)
    elif path.is_file() and path.suffix.lower() == ".txt":
        items = _listed_items(path)
    elif path.is_file():
        items = [InputItem(path.name, str(path.resolve()))]
    else:
        raise InputError(f"{path}: no such file or directory")
    if not items:
        raise InputError(f"{path}: no {modality} files found (extensions: {' '.join(suffixes)})")
    _check_unique(path, items)
    return items


def _directory_items(root: Path, suffixes: tuple[str, ...]) -> list[InputItem]:
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes]
    relative = sorted(p.relative_to(root).as_posix() for p in files)
    return [InputItem(rel, str((root / rel).resolve())) for rel in relative]


def _listed_items(listing: Path) -> list[InputItem]:
    """One path per line (relative to the list's folder); blank lines and '#' comments skipped."""
    try:
        lines = listing.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{listing}: cannot read the file list ({err})") from None
    items = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            items.append(InputItem(entry, str((listing.parent / Path(entry).expanduser()).resolve())))
    return items


def _check_unique(path: Path, items: list[InputItem]) -> None:
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
    from cmcr.threads import usable_cores

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
    path = out / ERRORS_FILE
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _rewrite_errors(out: Path, errors: list[dict[str, Any]]) -> None:
    tmp = out / (ERRORS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
    os.replace(tmp, out / ERRORS_FILE)


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
                label: str | None = None) -> EmbedSummary:
    """Embed ``items`` into the store ``out``, resuming an interrupted run of the same inputs
    (refused if the input list changed), holding an exclusive lock on ``out`` meanwhile.

    ``on_batch(k)`` is called after batch k is handed to the store (for progress hooks and tests).
    """
    modality = space.check_modality(modality)
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    out = Path(out).expanduser()
    with store_lock(out):
        return _embed_locked(space, modality, items, out, batch_size, workers, shard_rows,
                             store_dtype, overwrite, progress, on_batch, label)


def _embed_locked(space: Space, modality: str, items: Sequence[InputItem], out: Path,
                  batch_size: int, workers: int | None, shard_rows: int, store_dtype: str,
                  overwrite: bool, progress: bool, on_batch: Callable[[int], None] | None,
                  label: str | None) -> EmbedSummary:
    from tqdm.auto import tqdm

    writer = StoreWriter(out, dim=space.dim, space=space.name, modality=modality,
                         dtype=store_dtype, normalized=True, shard_rows=shard_rows,
                         overwrite=overwrite)
    if writer.num_rows:
        check_same_inputs(out, items, open_store(out).ids)
    else:
        (out / INPUTS_FILE).write_text(json.dumps(inputs_fingerprint(items)) + "\n", encoding="utf-8")
    start = resume_point(out, items) if writer.num_rows else 0
    errors = [e for e in read_errors(out) if e["index"] < start] if start else []
    _rewrite_errors(out, errors)
    preprocessor = space.preprocessor(modality)
    workers = default_workers() if workers is None else workers
    loader = make_loader(ItemDataset(items, preprocessor, modality),
                         grid_batches(start, len(items), batch_size), Collate(preprocessor), workers,
                         pin_memory=getattr(getattr(space, "device", None), "type", "") == "cuda")
    began = time.perf_counter()
    bar = tqdm(total=len(items), initial=start, unit="item", disable=not progress,
               desc=label or f"embed {modality} ({space.name.rpartition('/')[2]})",
               dynamic_ncols=True)
    with bar, open(out / ERRORS_FILE, "a", encoding="utf-8") as error_log:
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


def _store_batch(space: Space, modality: str, batch: Batch, items: Sequence[InputItem], start: int,
                 writer: StoreWriter, error_log: Any, errors: list[dict[str, Any]]) -> None:
    """Record the batch's errors, then its rows; items before ``start`` are already stored."""
    for index, reason in batch.errors:
        if index >= start:
            record = {"index": index, "id": items[index].id, "path": items[index].source,
                      "reason": reason}
            errors.append(record)
            error_log.write(json.dumps(record, ensure_ascii=False) + "\n")
    error_log.flush()
    if batch.inputs is None:
        return
    rows = space.encode(modality, batch.inputs).numpy()
    keep = np.array([index >= start for index in batch.indices])
    if keep.any():
        kept = [items[i] for i, k in zip(batch.indices, keep) if k]
        writer.append(rows[keep], [item.id for item in kept],
                      [row_metadata(modality, item) for item in kept])


def row_metadata(modality: str, item: InputItem) -> dict[str, str]:
    """What a store row records of its input: the text itself, or the file's absolute path
    (what a search index shows and serves)."""
    if modality == "text":
        return {"text": item.source}
    return {"source": os.path.abspath(item.source)}


def _write_run_file(out: Path, space: Space, modality: str, summary: EmbedSummary) -> None:
    from cmcr.version import __version__

    record = {"space": space.name, "modality": modality, "items": summary.items,
              "rows": summary.rows, "errors": len(summary.errors), "cmcr_version": __version__}
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
