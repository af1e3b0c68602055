"""One segment of an index on disk: building it from a store (projected chunk by chunk, every
row checked finite) and checking it when the index is opened (its files' sha256, its FAISS
index's kind, dims and rows, its string tables' rows and UTF-8)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cmcr.errors import ConfigError, StoreError
from cmcr.serve import ann
from cmcr.serve.calibration import read_moments, segment_moments, write_moments
from cmcr.serve.manifest import (MOMENTS_FILE, Collection, file_sha256, segment_digests,
                                 segment_path)
from cmcr.serve.records import StringTable, StringTableWriter
from cmcr.data.store import EmbeddingStore, shown_id

SOURCE_KEYS = ("source", "path", "file", "filepath", "image", "audio")  # metadata naming the file
TEXT_KEYS = ("text", "caption", "sentence")
LABEL_KEYS = ("label", "labels", "caption", "title", "concept", "concepts", "class", "category",
              "tags")  # metadata that says what a row shows (a text row's caption is its text)
MAX_LABEL_CHARS = 300
Projector = Callable[[np.ndarray], np.ndarray]


def row_source(metadata: dict[str, Any] | None, item_id: str, modality: str) -> str:
    """What a row shows: its text (text rows) or its file (media rows): from the store's
    metadata, else the id itself (ids are paths relative to the input for ``cmcr embed``)."""
    keys = TEXT_KEYS if modality == "text" else SOURCE_KEYS
    for key in keys:
        value = (metadata or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return "" if modality == "text" else item_id


def row_label(metadata: dict[str, Any] | None, modality: str) -> str:
    """A row's caption or label from its store's metadata (a string, or a list joined by
    commas), at most MAX_LABEL_CHARS characters; "" when it has none."""
    for key in LABEL_KEYS:
        if modality == "text" and key in TEXT_KEYS:
            continue
        value = (metadata or {}).get(key)
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(item) for item in value if isinstance(item, (str, int, float)))
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
            text = " ".join(str(value).split())
            return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 1] + "…"
    return ""


class CommonFolder:
    """The deepest folder holding every path seen (absolute paths only; else None)."""

    def __init__(self) -> None:
        self.folder: str | None = None
        self.valid = True

    def add(self, path: str) -> None:
        if not self.valid:
            return
        if not os.path.isabs(path):
            self.valid = False
        elif self.folder is None:
            self.folder = os.path.dirname(path)
        elif not path.startswith(self.folder.rstrip(os.sep) + os.sep):
            self.folder = os.path.commonpath([self.folder, os.path.dirname(path)])

    @property
    def root(self) -> str | None:
        return self.folder if self.valid else None


def sample_rows(store: EmbeddingStore, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct rows drawn at random (sorted reads), float32."""
    count = min(count, len(store))
    chosen = np.sort(np.random.default_rng(seed).choice(len(store), size=count, replace=False))
    return store.take(chosen)


# -- non-finite rows -----------------------------------------------------------------------------
def nonfinite_row_error(store: EmbeddingStore, collection: Collection, row: int) -> StoreError:
    """Why store row ``row`` has no finite joint-space vector: the store, or the model."""
    item = shown_id(store.ids[row]) if row < len(store) else "?"
    if not np.isfinite(store.rows(row, row + 1)).all():
        return StoreError(f"{store.path}: row {row} (id {item}) holds NaN/inf: the store is "
                          "damaged; re-embed it (cmcr embed --overwrite)")
    return StoreError(f"{store.path}: row {row} (id {item}) projects to NaN/inf through the "
                      f"model's '{collection.space}' projector: the model gives non-finite "
                      "outputs (re-import or retrain it)")


def check_finite_rows(joint: np.ndarray, start: int, store: EmbeddingStore,
                      collection: Collection) -> None:
    """Refuse a chunk of projected rows (store rows ``start``...) holding NaN/inf."""
    bad = ~np.isfinite(joint).all(axis=1)
    if bad.any():
        raise nonfinite_row_error(store, collection, start + int(np.flatnonzero(bad)[0]))


def checked_sample(store: EmbeddingStore, project: Projector, collection: Collection,
                   count: int, seed: int, chunk_rows: int) -> np.ndarray:
    """Projected random rows (to train or tune an index); on NaN/inf, the first bad row of the
    store (found by a scan in order) is named."""
    joint = project(sample_rows(store, count, seed))
    if not np.isfinite(joint).all():
        for start, rows in store.iter_chunks(chunk_rows):
            check_finite_rows(project(rows), start, store, collection)
    return joint


# -- building --------------------------------------------------------------------------------------
def build_collection(stem: Path, store: EmbeddingStore, project: Projector, dim: int,
                     collection: Collection, *, index_type: str = "auto",
                     memory_budget: int | None = None,
                     target_recall: float = ann.DEFAULT_TARGET_RECALL, chunk_rows: int = 65536,
                     progress: bool = True) -> None:
    """Choose the collection's index (cmcr.serve.ann's rule), build and tune it, and rebuild it as
    HNSW when IVF cannot beat exact search on these rows; the outcome (and the sha256 of the
    segment's files) is recorded in ``collection``."""
    plan = ann.choose_index(len(store), dim, index_type, memory_budget)
    build = functools.partial(build_segment, stem, store, project, dim, collection=collection,
                              target_recall=target_recall, chunk_rows=chunk_rows,
                              progress=progress)
    tuned = build(plan)
    fallback = ann.fallback_plan(plan, tuned[0], len(store), dim, memory_budget)
    if fallback is not None:
        print(f"cmcr: {collection.name}: {fallback.reason}; rebuilding", file=sys.stderr)
        tuned = build(fallback)
        if tuned[1] is not None and tuned[1] < target_recall:
            exact = ann.IndexPlan("Flat", 0, None, f"{fallback.reason}, which reached recall@10 "
                                  f"{tuned[1]:.3f} < {target_recall}: exact search")
            print(f"cmcr: {collection.name}: {exact.reason}", file=sys.stderr)
            tuned = build(exact)
    collection.search_value, collection.tuned_recall = tuned
    calibrate_segment(stem.parent, collection, dim)
    collection.sha256 = segment_digests(stem.parent, stem.name)


def calibrate_segment(directory: Path, collection: Collection, dim: int) -> None:
    """Estimate the collection's score calibration from its built segment (cmcr.serve.calibration)
    and record it, with the sha256 of its optional files, in ``collection``."""
    index = ann.read_index(segment_path(directory, collection.segment, "faiss"),
                           collection.factory)
    moments, sampled = segment_moments(index)
    write_moments(segment_path(directory, collection.segment, MOMENTS_FILE), moments)
    collection.calibration_rows = sampled
    collection.extra_sha256 = segment_digests(directory, collection.segment,
                                              collection.extra_files)


def build_segment(stem: Path, store: EmbeddingStore, project: Projector,
                  dim: int, plan: ann.IndexPlan, *, collection: Collection, target_recall: float,
                  chunk_rows: int, progress: bool) -> tuple[int | None, float | None]:
    """Project ``store`` chunk by chunk into a new FAISS index and its row tables; returns the
    tuned search breadth and the recall it reached (None, None for exact search)."""
    from tqdm.auto import tqdm

    collection.factory, collection.reason = plan.factory, plan.reason
    collection.search_parameter = plan.search_parameter
    index = ann.new_index(plan.factory, dim)
    sample = functools.partial(checked_sample, store, project, collection, chunk_rows=chunk_rows)
    if plan.train_rows:
        ann.train_index(index, sample(plan.train_rows, 0))
    truth = None
    if plan.search_parameter:
        truth = ann.ExactTopK(ann.perturbed_queries(sample(ann.TUNING_QUERIES, 1)), ann.TUNING_K)
    ids, sources, labels = (StringTableWriter(Path(f"{stem}.{kind}"))
                            for kind in ("ids", "sources", "labels"))
    folder = CommonFolder()
    bar = tqdm(total=len(store), unit="row", disable=not progress, dynamic_ncols=True,
               desc=f"index {collection.name} ({collection.modality} via {collection.space}, "
                    f"{plan.factory})")
    storage = ann.flat_storage(index, len(store))
    with bar:
        for start, rows, row_ids, metadata in store.iter_labelled_chunks(chunk_rows):
            joint = project(rows)
            check_finite_rows(joint, start, store, collection)
            if storage is not None:
                storage[start:start + len(joint)] = joint
            else:
                index.add(joint)
            if truth is not None:
                truth.update(start, joint)
            ids.extend(row_ids)
            write_row_records(sources, labels, folder, metadata or [None] * len(row_ids),
                              row_ids, collection.modality)
            bar.update(len(rows))
    for table in (ids, sources, labels):
        table.close()
    collection.labels = True
    collection.root = collection.media or (folder.root if collection.modality != "text" else None)
    tuned = ann.tune_search(index, plan, truth, target_recall) if truth else (None, None)
    if ann.scans_most_lists(plan, tuned[0]):
        collection.reason += (f"; nprobe={tuned[0]} of {plan.lists} lists was needed for the "
                              "target recall, so this index is hardly faster than exact search "
                              "(try --index-type HNSW32, or a lower --target-recall)")
    ann.write_index(index, Path(f"{stem}.faiss"))
    return tuned


def write_row_records(sources: StringTableWriter, labels: StringTableWriter, folder: CommonFolder,
                      metadata: list[dict[str, Any] | None], row_ids: list[str],
                      modality: str) -> None:
    """A chunk's sources (files or texts) and labels, and its files' common folder."""
    shown = [row_source(m, i, modality) for m, i in zip(metadata, row_ids)]
    sources.extend(shown)
    labels.extend(row_label(m, modality) for m in metadata)
    if modality != "text":
        for source in shown:
            folder.add(source)


# -- checking a built segment ---------------------------------------------------------------------
def check_digests(directory: Path, collection: Collection, manifest: Path) -> None:
    """Refuse a segment file whose sha256 is not the one recorded at build time."""
    recorded_digests = {**(collection.sha256 or {}), **(collection.extra_sha256 or {})}
    for suffix, recorded in recorded_digests.items():
        path = segment_path(directory, collection.segment, suffix)
        try:
            found = file_sha256(path)
        except OSError as err:
            raise StoreError(f"{path}: segment '{collection.segment}' is missing a file "
                             f"({err.strerror or err}); rebuild the index") from None
        if found != recorded:
            raise StoreError(f"{path}: segment '{collection.segment}' was changed or swapped "
                             f"after the build (sha256 {found[:12]}..., {manifest.name} records "
                             f"{recorded[:12]}...); rebuild the index")


def open_segment(directory: Path, collection: Collection, dim: int, mmap: bool) -> Any:
    """The segment's FAISS index, refused unless its kind is the recorded factory's and it holds
    ``collection.rows`` ``dim``-d rows."""
    path = segment_path(directory, collection.segment, "faiss")
    if not path.is_file():
        raise StoreError(f"{path}: segment '{collection.segment}' has no FAISS index file; "
                         "rebuild the index")
    index = ann.read_index(path, collection.factory, mmap=mmap)
    try:
        expected = ann.index_kind(ann.new_index(collection.factory, dim))
    except ConfigError:
        raise StoreError(f"{directory / 'index.json'}: segment '{collection.segment}': factory "
                         f"{collection.factory!r} is not a valid FAISS factory for {dim}-d "
                         "rows") from None
    found = ann.index_kind(index)
    if found != expected:
        raise StoreError(f"{path}: segment '{collection.segment}' is a {found} index, but "
                         f"index.json records factory {collection.factory!r} ({expected})")
    if index.d != dim or index.ntotal != collection.rows:
        raise StoreError(f"{path}: segment '{collection.segment}' holds {index.ntotal} "
                         f"{index.d}-d rows, but index.json records {collection.rows} "
                         f"{dim}-d rows")
    return index


def open_table(directory: Path, collection: Collection, kind: str) -> StringTable:
    """A segment's ids or sources table, refused unless it holds one valid UTF-8 string a row."""
    stem = directory / f"{collection.segment}.{kind}"
    table = StringTable(stem)
    if len(table) != collection.rows:
        raise StoreError(f"{stem}.bin: segment '{collection.segment}' has {len(table)} {kind}, "
                         f"but index.json records {collection.rows} rows")
    offsets = np.load(f"{stem}.offsets.npy", mmap_mode="r", allow_pickle=False)
    raw = Path(f"{stem}.bin").read_bytes()
    data = np.frombuffer(raw, dtype=np.uint8)
    if offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise StoreError(f"{stem}.offsets.npy: offsets are not increasing from 0: the table is "
                         "damaged; rebuild the index")
    starts = offsets[:-1][offsets[:-1] < offsets[1:]]
    try:
        raw.decode("utf-8")
        if ((data[starts] & 0xC0) == 0x80).any():  # a row beginning inside a character
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "a row starts inside a character")
    except UnicodeDecodeError as err:
        raise StoreError(f"{stem}.bin: not valid UTF-8 ({err.reason}): the table is damaged; "
                         "rebuild the index") from None
    return table


def open_moments(directory: Path, collection: Collection, dim: int) -> np.ndarray | None:
    """The collection's calibration moments (checked), or None when it has no calibration."""
    if not collection.calibration_rows:
        return None
    return read_moments(segment_path(directory, collection.segment, MOMENTS_FILE), dim)
