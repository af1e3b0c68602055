"""A search index over a connected model's joint space: ``cmcr index`` and ``cmcr.Index``.

An index is a directory::

    index.json                  format, the model (path + weights digest), the frozen spaces,
                                and one entry per collection (one store projected into the space)
    segment-00000.faiss         that collection's FAISS index (kind chosen by cmcr.serve.ann)
    segment-00000.ids.*         its rows' store ids      (memory-mapped string tables)
    segment-00000.sources.*     its rows' media paths or texts

Global row numbers run through the collections in order. Each collection is a segment of its
own, so ``add`` never retrains what is there, and a modality filter only searches its segments.
The manifest and the segments' checks live in cmcr.serve.manifest and cmcr.serve.segments;
this module opens, builds, extends and searches an index.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cmcr.errors import CheckpointError, CmcrError, ConfigError, StoreError
from cmcr.serve import ann, ranking
from cmcr.serve.calibration import CollectionCalibration
from cmcr.serve.manifest import (INDEX_FILE, Collection, IndexManifest, model_digest,
                                 read_manifest, write_manifest)
from cmcr.serve.ranking import MAX_DEPTH, MAX_K, SearchFilters, check_page
from cmcr.serve.records import StringTable
from cmcr.serve.resume import refuse_finished, starting_manifest
from cmcr.serve.segments import (build_collection, build_segment, calibrate_segment, check_digests,
                                 open_moments, open_segment, open_table, row_source, sample_rows)
from cmcr.data.store import EmbeddingStore, open_store, store_lock
from cmcr.runtime.threads import apply_thread_policy

__all__ = ["Index", "StoreSource", "SearchResult", "SearchFilters", "NotInIndexError",
           "Collection", "IndexManifest", "INDEX_FILE", "model_digest", "read_manifest",
           "write_manifest", "build_collection", "build_segment", "row_source", "sample_rows",
           "check_page", "infer_model_space", "MAX_K", "MAX_DEPTH"]

MEDIA_MODALITIES = ("image", "audio", "video")


class NotInIndexError(CmcrError, KeyError):
    """A row that is not in the index, or has nothing to serve."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class StoreSource:
    """A store to index, with what cannot always be read from the store itself."""

    path: str
    space: str | None = None  # the model space that projects it (default: inferred)
    media: str | None = None  # folder the store's ids are relative paths in (for media files)
    name: str | None = None  # collection name (default: the store folder's name)

    @classmethod
    def parse(cls, text: str) -> "StoreSource":
        """``PATH`` or ``path=PATH,space=NAME,media=DIR,name=NAME`` (keys in any order)."""
        if "=" not in text.split(",")[0]:
            return cls(path=text)
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key not in ("path", "space", "media", "name") or not value:
                raise ConfigError(f"--store '{text}': expected PATH or path=PATH[,space=NAME]"
                                  "[,media=DIR][,name=NAME]")
            fields[key] = value
        if "path" not in fields:
            raise ConfigError(f"--store '{text}': path=PATH is missing")
        return cls(**fields)


@dataclass
class SearchResult:
    """One hit: the row, what it is, its cosine in the joint space (``score``) and its
    calibrated score (standard deviations above its collection's typical cosine for this
    query; None in an index without calibration), the score results are ranked by."""

    row: int
    id: str
    modality: str
    space: str
    collection: str
    score: float
    calibrated: float | None = None
    source: str | None = None  # media file path as stored (image/audio rows)
    text: str | None = None  # the text (text rows)
    label: str | None = None  # caption or label from the store's metadata
    path: str | None = None  # the media file relative to its collection's root folder

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Index:
    """A built index: search it by text, file, stored row or vector; ``add`` more stores."""

    def __init__(self, path: Path, manifest: IndexManifest, *, mmap: bool = True,
                 spaces: dict[str, str] | None = None, device: str = "auto"):
        self.path = path
        self.manifest = manifest
        self._mmap = mmap
        self._space_overrides = dict(spaces or {})
        self._device = device
        self._segments: dict[str, Any] = {}
        self._tables: dict[tuple[str, str], StringTable] = {}
        self._encoder: Any = None
        self._searchers: dict[str, Any] = {}
        self._direct_maps: set[str] = set()
        self._direct_map_lock = threading.Lock()
        self._calibrations: dict[str, CollectionCalibration | None] = {}

    # -- opening and building --------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, spaces: dict[str, str] | None = None,
             model: str | Path | None = None, device: str = "auto", mmap: bool = True) -> "Index":
        """Open an index (memory-mapped) after checking it (:meth:`verify`); ``spaces``
        overrides the frozen space of a model space (e.g. ``{"clip": "clip:DIR"}``); ``model``
        must be the one the index was built with."""
        directory = Path(path).expanduser()
        if (directory / "index" / INDEX_FILE).is_file() and not (directory / INDEX_FILE).is_file():
            directory = directory / "index"  # a demo's output folder holds its index
        manifest = read_manifest(directory)
        index = cls(directory, manifest, mmap=mmap, spaces=spaces, device=device)
        index.verify()
        apply_thread_policy()  # cmcr's thread choice unless the caller made one (cmcr.runtime.threads)
        if not manifest.complete:
            print(f"cmcr: note: {directory}: its build did not finish ({len(manifest.collections)} "
                  "collection(s) are there); run the same 'cmcr index build' again to finish it",
                  file=sys.stderr)
        if not index.calibrated and len(manifest.collections) > 1:
            print(f"cmcr: note: {directory}: built by an older cmcr without score calibration, "
                  "so results of different collections are merged by raw cosine (a text query's "
                  "sounds may all rank below its pictures); add it with 'cmcr index calibrate "
                  f"{directory}'", file=sys.stderr)
        if model is not None:
            index.check_model(model)
        return index

    def verify(self) -> None:
        """Check each segment against ``index.json``: its files' sha256 (indexes built before
        they were recorded: the rest only), its FAISS index's kind, dims and rows, its tables'
        rows and UTF-8; a StoreError names the segment's file."""
        unrecorded = [c.segment for c in self.manifest.collections if c.sha256 is None]
        if unrecorded:
            print(f"cmcr: note: {self.path}: built by an older cmcr that did not record its "
                  "segments' sha256, so changed or swapped segment files cannot be detected; "
                  "rebuild it (cmcr index build --overwrite) to have them checked",
                  file=sys.stderr)
        for collection in self.manifest.collections:
            check_digests(self.path, collection, self.path / INDEX_FILE)
            self._segment(collection)
            self._table(collection, "ids")
            self._table(collection, "sources")
            if collection.labels:
                self._table(collection, "labels")
            self.calibration(collection)

    @classmethod
    def build(cls, out: str | Path, model: str | Path, stores: Sequence[StoreSource | str], *,
              overwrite: bool = False, progress: bool = True, **options: Any) -> "Index":
        """Project ``stores`` with ``model`` into a new index at ``out``; ``options`` go to
        :meth:`add` (index_type, memory_budget, target_recall, chunk_rows). An unfinished index
        there (a killed build) is resumed when begun with the same model and first stores, else
        replaced; a finished one is replaced only with ``overwrite``."""
        from cmcr.method.model import ConnectedModel

        directory = Path(out).expanduser()
        refuse_finished(directory, overwrite)  # before loading anything
        loaded = ConnectedModel.from_pretrained(model)
        sources = [s if isinstance(s, StoreSource) else StoreSource.parse(s) for s in stores]
        fresh = IndexManifest(model=str(Path(model).expanduser().resolve()),
                              model_digest=model_digest(model), dim=loaded.out_dim,
                              complete=False)
        with store_lock(directory):
            refuse_finished(directory, overwrite)
            begun = starting_manifest(directory, fresh, [s.path for s in sources], overwrite,
                                      lambda folder, manifest: cls(folder, manifest).verify())
            index = cls(directory, begun)
            write_manifest(directory, index.manifest)
            index._add_locked(sources[len(index.manifest.collections):], model=loaded,
                              progress=progress, **options)
            index.manifest.complete = True
            write_manifest(directory, index.manifest)
        return index

    def add(self, stores: Sequence[StoreSource | str], *, index_type: str = "auto",
            memory_budget: int | None = None, target_recall: float = ann.DEFAULT_TARGET_RECALL,
            chunk_rows: int = 65536, progress: bool = True, model: Any = None) -> list[Collection]:
        """Project each store into a new segment; ``index.json`` is rewritten after each. Holds an
        exclusive lock on the index folder, so two ``add`` runs cannot interleave."""
        with store_lock(self.path):
            self.manifest = read_manifest(self.path)  # what another run may have added meanwhile
            return self._add_locked(stores, index_type=index_type, memory_budget=memory_budget,
                                    target_recall=target_recall, chunk_rows=chunk_rows,
                                    progress=progress, model=model)

    def _add_locked(self, stores: Sequence[StoreSource | str], *, index_type: str = "auto",
                    memory_budget: int | None = None,
                    target_recall: float = ann.DEFAULT_TARGET_RECALL, chunk_rows: int = 65536,
                    progress: bool = True, model: Any = None) -> list[Collection]:
        model = model if model is not None else self.load_model()
        sources = [s if isinstance(s, StoreSource) else StoreSource.parse(s) for s in stores]
        opened = [(source, open_store(source.path)) for source in sources]
        plans = [self._plan_collection(source, store, model) for source, store in opened]
        resolved = [plan.store for plan in plans]
        for store_path in set(resolved):
            if resolved.count(store_path) > 1:
                raise StoreError(f"{store_path}: the store is given twice")
        added = []
        for (source, store), collection in zip(opened, plans):
            self._place(collection)
            build_collection(self.path / collection.segment, store,
                             _projector(model, collection.space, collection.modality),
                             self.manifest.dim, collection,
                             index_type=index_type, memory_budget=memory_budget,
                             target_recall=target_recall, chunk_rows=chunk_rows, progress=progress)
            self.manifest.collections.append(collection)
            self._record_space(collection)
            write_manifest(self.path, self.manifest)
            added.append(collection)
        return added

    def _plan_collection(self, source: StoreSource, store: EmbeddingStore, model: Any) -> Collection:
        """Check a store against the model and the index; the collection it will become."""
        resolved = str(Path(source.path).expanduser().resolve())
        if any(c.store == resolved for c in self.manifest.collections):
            raise StoreError(f"{source.path}: this store is already in the index {self.path}")
        if not store.info.complete:
            raise StoreError(f"{source.path}: the store is incomplete (an interrupted or running "
                             "'cmcr embed'?): finish it first")
        if store.modality is None and source.space is None:
            raise StoreError(f"{source.path}: the store does not record its modality (a plain "
                             ".npy?): give it as path=...,space=NAME and store it with cmcr embed")
        space = source.space or infer_model_space(model, store)
        if space not in model.space_names:
            raise ConfigError(f"--store {source.path}: space '{space}' is not one of the model's "
                              f"spaces {model.space_names}")
        expected = model.config.spaces[space].dim
        if store.dim != expected:
            raise StoreError(f"{source.path}: {store.dim}-d rows, but the model's '{space}' "
                             f"projector takes {expected}-d (was this store made by another space?)")
        if not len(store):
            raise StoreError(f"{source.path}: the store is empty")
        media = str(Path(source.media).expanduser().resolve()) if source.media else None
        return Collection(name=source.name or Path(resolved).name, store=resolved, space=space,
                          frozen_space=store.space, modality=store.modality or "unknown",
                          rows=len(store), start=0, segment="", factory="", reason="", media=media)

    def _place(self, collection: Collection) -> None:
        """Give a new collection its segment, first row and a name no other one has."""
        number = len(self.manifest.collections)
        if collection.name in {c.name for c in self.manifest.collections}:
            collection.name = f"{collection.name}-{number}"
        collection.segment, collection.start = f"segment-{number:05d}", self.manifest.rows

    def _record_space(self, collection: Collection) -> None:
        known = self.manifest.spaces.get(collection.space)
        spec = collection.frozen_space
        if spec and not spec.startswith("precomputed:") and known is None:
            self.manifest.spaces[collection.space] = spec

    # -- the model and the query encoder ---------------------------------------------------
    def load_model(self) -> Any:
        from cmcr.method.model import ConnectedModel

        self.check_model(self.manifest.model)
        return ConnectedModel.from_pretrained(self.manifest.model)

    def check_model(self, model_dir: str | Path) -> None:
        """Refuse a model whose weights are not the ones the index's rows were projected by."""
        digest = model_digest(model_dir)
        if digest != self.manifest.model_digest:
            raise CheckpointError(
                f"{self.path}: the index was built with another model (weights sha256 "
                f"{self.manifest.model_digest[:12]}..., {model_dir} has {digest[:12]}...): "
                "search it with the model it was built with, or rebuild it with 'cmcr index build'")

    @property
    def encoder(self) -> Any:
        """Embeds queries (texts, files, uploads) into the joint space; loaded on first use."""
        if self._encoder is None:
            from cmcr.serve.query import QueryEncoder

            spaces = {**self.manifest.spaces, **self._space_overrides}
            self._encoder = QueryEncoder(self.load_model(), spaces, device=self._device)
        return self._encoder

    # -- rows ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.manifest.rows

    @property
    def modalities(self) -> list[str]:
        return sorted({c.modality for c in self.manifest.collections})

    def collection_of(self, row: int) -> Collection:
        if not 0 <= row < len(self):
            raise NotInIndexError(f"row {row} is not in the index (it has rows 0..{len(self) - 1})")
        return next(c for c in self.manifest.collections if c.start <= row < c.start + c.rows)

    def _table(self, collection: Collection, kind: str) -> StringTable:
        key = (collection.segment, kind)
        if key not in self._tables:
            self._tables[key] = open_table(self.path, collection, kind)
        return self._tables[key]

    def _segment(self, collection: Collection) -> Any:
        """The collection's FAISS index as stored (CPU, memory-mapped), checked against it."""
        if collection.segment not in self._segments:
            self._segments[collection.segment] = open_segment(
                self.path, collection, self.manifest.dim, self._mmap)
        return self._segments[collection.segment]

    def _searcher(self, collection: Collection) -> Any:
        """What searches the collection: a GPU copy when FAISS has GPUs, else the stored index."""
        if collection.segment not in self._searchers:
            searcher = ann.to_gpu_if_present(self._segment(collection), self._device)
            ann.set_search_parameter(searcher, collection.search_parameter, collection.search_value)
            self._searchers[collection.segment] = searcher
        return self._searchers[collection.segment]

    def calibration(self, collection: Collection) -> CollectionCalibration | None:
        """The collection's score calibration (checked when first read), None without one."""
        if collection.segment not in self._calibrations:
            moments = open_moments(self.path, collection, self.manifest.dim)
            self._calibrations[collection.segment] = (
                None if moments is None else CollectionCalibration(moments))
        return self._calibrations[collection.segment]

    @property
    def calibrated(self) -> bool:
        """Whether every collection has a score calibration (else results merge by cosine)."""
        return all(c.calibration_rows for c in self.manifest.collections)

    def calibrate(self) -> list[str]:
        """Add the score calibration to the collections that lack it (indexes built by an older
        cmcr); returns their names. Holds the index folder's lock."""
        with store_lock(self.path):
            self.manifest = read_manifest(self.path)
            missing = [c for c in self.manifest.collections if not c.calibration_rows]
            for collection in missing:
                calibrate_segment(self.path, collection, self.manifest.dim)
                write_manifest(self.path, self.manifest)
            self._calibrations.clear()
        return [c.name for c in missing]

    def result(self, row: int, score: float, calibrated: float | None = None) -> SearchResult:
        """What row ``row`` is (read from the mapped tables: nothing else is loaded)."""
        collection = self.collection_of(row)
        local = row - collection.start
        item_id = self._table(collection, "ids")[local]
        source = self._table(collection, "sources")[local] or None
        label = self._table(collection, "labels")[local] if collection.labels else ""
        is_media = collection.modality in MEDIA_MODALITIES
        return SearchResult(row=row, id=item_id, modality=collection.modality,
                            space=collection.space, collection=collection.name, score=score,
                            calibrated=calibrated, source=source if is_media else None,
                            text=None if is_media else source, label=label or None,
                            path=shown_path(source, collection) if is_media else None)

    def row_path(self, row: int) -> str:
        """The row's file relative to its collection's root (rows without a file: the id)."""
        found = self.result(row, 0.0)
        return found.path or found.id

    def vector(self, row: int) -> np.ndarray:
        """The joint-space vector stored for ``row`` (approximate for compressed indexes)."""
        collection = self.collection_of(row)
        segment = self._segment(collection)
        with self._direct_map_lock:  # concurrent "more like this" requests of a server
            if "IVF" in collection.factory and collection.segment not in self._direct_maps:
                ann.require_faiss().extract_index_ivf(segment).make_direct_map()
                self._direct_maps.add(collection.segment)
        return np.asarray(segment.reconstruct(row - collection.start), dtype=np.float32)

    def media_path(self, row: int) -> Path | None:
        """The media file of ``row`` when it has one that exists (what the server may send)."""
        found = self.result(row, 0.0)
        if found.source is None:
            return None
        path = Path(found.source)
        if not path.is_absolute():
            media = self.collection_of(row).media
            if media is None:
                return None
            path = (Path(media) / path).resolve()
            if not path.is_relative_to(Path(media)):
                return None  # an id like ../../x does not leave the media folder
        return path if path.is_file() else None

    # -- search ----------------------------------------------------------------------------
    def search(self, *, text: str | None = None, image: str | Path | None = None,
               audio: str | Path | None = None, like: int | None = None,
               vector: Any = None, modality: str | None = None, k: int = 10,
               offset: int = 0, rank: str = "auto", **filters: Any) -> list[SearchResult]:
        """The ``k`` rows nearest the query (exactly one of text, image, audio, like, vector),
        best first; ``offset`` pages. Keyword filters (:class:`SearchFilters`): ``modality``,
        ``collections``, ``path_prefix``, ``min_score``, ``min_calibrated``, ``dedup``.
        ``rank``: ``auto`` (calibrated when the index has it), ``calibrated`` or ``cosine``."""
        given = {"text": text, "image": image, "audio": audio, "like": like, "vector": vector}
        chosen = [name for name, value in given.items() if value is not None]
        if len(chosen) != 1:
            raise ConfigError(f"give exactly one query (text, image, audio, like or vector), "
                              f"got {chosen or 'none'}")
        wanted = SearchFilters(modality=modality, **filters)
        if like is not None:
            return self.search_vector(self.vector(int(like)), k=k, offset=offset,
                                      exclude=int(like), rank=rank, filters=wanted)
        if vector is not None:
            query = np.asarray(vector, dtype=np.float32)
        elif text is not None:
            query = self.encoder.embed_text(text)
        else:
            query = self.encoder.embed_file(image if image is not None else audio,
                                            "image" if image is not None else "audio")
        return self.search_vector(query, k=k, offset=offset, rank=rank, filters=wanted)

    def search_vector(self, query: np.ndarray, modality: str | None = None, k: int = 10,
                      offset: int = 0, exclude: int | None = None, *, rank: str = "auto",
                      filters: SearchFilters | None = None) -> list[SearchResult]:
        """Search with a joint-space vector (d,): the collections' nearest rows ranked as one
        list (cmcr.serve.ranking), then filtered and paged."""
        check_page(k, offset)
        filters = filters or SearchFilters(modality=modality)
        query = self._checked_query(query)
        collections = self._collections_for(filters)
        rank = self._rank(rank, collections, filters)
        searches = [(self._searcher(c), c.start, c.rows, self.calibration(c)) for c in collections]
        wanted = offset + k
        depth = wanted + (exclude is not None)
        while True:
            candidates = ranking.gather(searches, query, depth, filters)
            order = ranking.ranked_order(candidates, rank)
            chosen = ranking.select(candidates, order, filters, wanted, exclude, self.row_path,
                                    self.vector)
            if len(chosen) >= wanted or candidates.complete or depth >= ranking.MAX_CANDIDATES:
                break
            depth = min(depth * 4, ranking.MAX_CANDIDATES)
        calibrated = candidates.calibrated
        return [self.result(int(candidates.rows[p]), float(candidates.scores[p]),
                            None if calibrated is None else float(calibrated[p]))
                for p in chosen[offset:]]

    def _checked_query(self, query: Any) -> np.ndarray:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.manifest.dim:
            raise ConfigError(f"query has {query.shape[0]} dims; the index holds "
                              f"{self.manifest.dim}-d joint-space rows")
        if not np.isfinite(query).all():
            raise CheckpointError(
                f"the query's joint-space vector holds {int((~np.isfinite(query)).sum())} NaN/inf "
                f"value(s) of {query.shape[0]}: a vector given with NaN/inf, or a model "
                f"({self.manifest.model}) whose projector gives non-finite outputs")
        return query

    def _rank(self, rank: str, collections: list[Collection], filters: SearchFilters) -> str:
        """``calibrated`` or ``cosine``: what the searched collections allow and ``rank`` asks."""
        if rank not in ranking.RANKS:
            raise ConfigError(f"rank must be one of {', '.join(ranking.RANKS)}, got {rank!r}")
        uncalibrated = [c.name for c in collections if not c.calibration_rows]
        if uncalibrated and (rank == "calibrated" or filters.min_calibrated is not None):
            raise ConfigError(f"collection(s) {', '.join(uncalibrated)} of {self.path} have no "
                              f"score calibration; add it with 'cmcr index calibrate {self.path}'")
        return "cosine" if rank == "cosine" or uncalibrated else "calibrated"

    def _collections_for(self, filters: SearchFilters) -> list[Collection]:
        chosen = list(self.manifest.collections)
        if filters.collections:
            names = {c.name for c in chosen}
            unknown = [name for name in filters.collections if name not in names]
            if unknown:
                raise ConfigError(f"the index has no collection '{unknown[0]}'; its collections: "
                                  f"{', '.join(sorted(names))}")
            chosen = [c for c in chosen if c.name in filters.collections]
        if filters.modality is not None:
            if filters.modality not in self.modalities:
                raise ConfigError(f"the index holds no '{filters.modality}' rows; its "
                                  f"modalities: {', '.join(self.modalities) or 'none'}")
            chosen = [c for c in chosen if c.modality == filters.modality]
            if not chosen:
                raise ConfigError(f"the chosen collections hold no '{filters.modality}' rows")
        return chosen

    # -- description -----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What ``cmcr index info`` and ``GET /api/info`` show."""
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return {"path": str(self.path), "rows": len(self), "dim": self.manifest.dim,
                "model": self.manifest.model, "model_digest": self.manifest.model_digest[:16],
                "spaces": {**self.manifest.spaces, **self._space_overrides},
                "modalities": self.modalities, "disk_bytes": size,
                "complete": self.manifest.complete,
                "collections": [asdict(c) for c in self.manifest.collections]}


def shown_path(source: str | None, collection: Collection) -> str | None:
    """A media row's file as shown: relative to its collection's root folder (its media folder,
    or the folder holding all its files), else its file name (paths of older indexes)."""
    if not source:
        return None
    path = Path(source)
    if not path.is_absolute():
        return source
    if collection.root and path.is_relative_to(collection.root):
        return path.relative_to(collection.root).as_posix()
    return path.name


def infer_model_space(model: Any, store: EmbeddingStore) -> str:
    """Which of the model's spaces projects ``store``: the one embedding its modality, or for
    the shared modality the one whose name is the store's space kind (``clip:...`` -> clip)."""
    modality = store.modality
    owners = [name for name, spec in model.config.spaces.items() if modality in spec.modalities]
    if modality == model.config.shared_modality or len(owners) != 1:
        kind = (store.space or "").partition(":")[0]
        if kind in model.space_names:
            return kind
        raise ConfigError(f"{store.path}: cannot tell which of the model's spaces "
                          f"{model.space_names} projects this {modality} store (space "
                          f"{store.space!r}); say it: --store path={store.path},space=NAME")
    return owners[0]


def _projector(model: Any, space: str, modality: str | None) -> Callable[[np.ndarray], np.ndarray]:
    def project(rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(model.project(space, rows, modality).float().cpu().numpy())
    return project
