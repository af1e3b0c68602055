"""A search index over a connected model's joint space: ``cmcr index`` and ``cmcr.Index``.

An index is a directory::

    index.json                  format, the model (path + weights digest), the frozen spaces,
                                and one entry per collection (one store projected into the space)
    segment-00000.faiss         that collection's FAISS index (kind chosen by cmcr.serve.ann)
    segment-00000.ids.*         its rows' store ids      (memory-mapped string tables)
    segment-00000.sources.*     its rows' media paths or texts

Global row numbers run through the collections in order. Each collection is a segment of its
own, so ``add`` never retrains what is there, and a modality filter only searches its segments.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cmcr.atomic import atomic_write_text
from cmcr.errors import CheckpointError, CmcrError, ConfigError, StoreError
from cmcr.serve import ann
from cmcr.serve.records import StringTable, StringTableWriter
from cmcr.store import EmbeddingStore, open_store, store_lock

INDEX_FILE = "index.json"
FORMAT_NAME = "cmcr-index"
FORMAT_VERSION = 1
MEDIA_MODALITIES = ("image", "audio", "video")
MAX_K = 1000
MAX_DEPTH = 10_000  # offset + k
SOURCE_KEYS = ("source", "path", "file", "filepath", "image", "audio")  # metadata naming the file
TEXT_KEYS = ("text", "caption", "sentence")


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
class Collection:
    """One store projected into the joint space: a segment of the index (``index.json``)."""

    name: str
    store: str
    space: str  # the model space that projected it
    frozen_space: str | None  # the store's own space spec, e.g. "clip:openai/clip-vit-base-patch32"
    modality: str
    rows: int
    start: int  # global row number of its first row
    segment: str  # file stem of its FAISS index and tables
    factory: str
    reason: str
    search_parameter: str | None = None
    search_value: int | None = None
    tuned_recall: float | None = None
    media: str | None = None


@dataclass
class SearchResult:
    """One hit: the row, what it is, and its score (cosine in the joint space)."""

    row: int
    id: str
    modality: str
    space: str
    collection: str
    score: float
    source: str | None = None  # media file path (image/audio rows)
    text: str | None = None  # the text (text rows)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IndexManifest:
    """``index.json``: the model, the frozen spaces and the collections."""

    model: str
    model_digest: str
    dim: int
    spaces: dict[str, str] = field(default_factory=dict)  # model space -> frozen space spec
    collections: list[Collection] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.collections)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **asdict(self)}


def model_digest(model_dir: str | Path) -> str:
    """sha256 of a connected model's weights: which model an index's rows were projected by."""
    weights = Path(model_dir) / "model.safetensors"
    try:
        digest = hashlib.sha256()
        with open(weights, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise CheckpointError(f"{weights}: cannot read the model's weights ({err})") from None
    return digest.hexdigest()


def read_manifest(directory: Path) -> IndexManifest:
    path = directory / INDEX_FILE
    if not path.is_file():
        raise StoreError(f"{directory}: not a cmcr index (no {INDEX_FILE}; build one with "
                         "'cmcr index build')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("format", None) != FORMAT_NAME:
            raise ValueError(f"format is not {FORMAT_NAME!r}")
        if data.pop("version", None) != FORMAT_VERSION:
            raise ValueError(f"version is not {FORMAT_VERSION} (this cmcr's)")
        collections = [Collection(**entry) for entry in data.pop("collections")]
        return IndexManifest(**data, collections=collections)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise StoreError(f"{path}: not a readable cmcr index manifest ({err})") from None


def write_manifest(directory: Path, manifest: IndexManifest) -> None:
    atomic_write_text(directory / INDEX_FILE, json.dumps(manifest.to_json(), indent=2) + "\n")


def check_page(k: int, offset: int) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")
    if offset < 0 or offset + k > MAX_DEPTH:
        raise ConfigError(f"offset must be >= 0 and offset + k <= {MAX_DEPTH}, got offset {offset}")


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

    # -- opening and building --------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, spaces: dict[str, str] | None = None,
             model: str | Path | None = None, device: str = "auto", mmap: bool = True) -> "Index":
        """Open an index (memory-mapped); ``spaces`` overrides the frozen space of a model
        space (e.g. ``{"clip": "clip:DIR"}``); ``model`` must be the one the index was built with."""
        directory = Path(path).expanduser()
        if (directory / "index" / INDEX_FILE).is_file() and not (directory / INDEX_FILE).is_file():
            directory = directory / "index"  # a demo's output folder holds its index
        manifest = read_manifest(directory)
        index = cls(directory, manifest, mmap=mmap, spaces=spaces, device=device)
        if model is not None:
            index.check_model(model)
        return index

    @classmethod
    def build(cls, out: str | Path, model: str | Path, stores: Sequence[StoreSource | str], *,
              overwrite: bool = False, progress: bool = True, **options: Any) -> "Index":
        """Project ``stores`` with ``model`` into a new index at ``out``; ``options`` go to
        :meth:`add` (index_type, memory_budget, target_recall, chunk_rows)."""
        from cmcr.model import ConnectedModel

        directory = Path(out).expanduser()
        if (directory / INDEX_FILE).exists() and not overwrite:
            raise StoreError(f"{directory}: an index is already there; add stores with "
                             "'cmcr index add', or pass --overwrite to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _remove_index_files(directory)
        loaded = ConnectedModel.from_pretrained(model)
        manifest = IndexManifest(model=str(Path(model).expanduser().resolve()),
                                 model_digest=model_digest(model), dim=loaded.out_dim)
        write_manifest(directory, manifest)
        index = cls(directory, manifest)
        index.add(stores, progress=progress, model=loaded, **options)
        return index

    def add(self, stores: Sequence[StoreSource | str], *, index_type: str = "auto",
            memory_budget: int | None = None, target_recall: float = ann.DEFAULT_TARGET_RECALL,
            chunk_rows: int = 65536, progress: bool = True, model: Any = None) -> list[Collection]:
        """Project each store into a new segment; ``index.json`` is rewritten after each. Holds an
        exclusive lock on the index folder, so two ``add`` runs cannot interleave."""
        with store_lock(self.path):
            self.manifest = read_manifest(self.path)  # what another run may have added meanwhile
            return self._add_locked(stores, index_type, memory_budget, target_recall, chunk_rows,
                                    progress, model)

    def _add_locked(self, stores: Sequence[StoreSource | str], index_type: str,
                    memory_budget: int | None, target_recall: float, chunk_rows: int,
                    progress: bool, model: Any) -> list[Collection]:
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
        from cmcr.model import ConnectedModel

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
            self._tables[key] = StringTable(self.path / f"{collection.segment}.{kind}")
        return self._tables[key]

    def _segment(self, collection: Collection) -> Any:
        """The collection's FAISS index as stored (CPU, memory-mapped)."""
        if collection.segment not in self._segments:
            self._segments[collection.segment] = ann.read_index(
                self.path / f"{collection.segment}.faiss", collection.factory, mmap=self._mmap)
        return self._segments[collection.segment]

    def _searcher(self, collection: Collection) -> Any:
        """What searches the collection: a GPU copy when FAISS has GPUs, else the stored index."""
        if collection.segment not in self._searchers:
            searcher = ann.to_gpu_if_present(self._segment(collection), self._device)
            ann.set_search_parameter(searcher, collection.search_parameter, collection.search_value)
            self._searchers[collection.segment] = searcher
        return self._searchers[collection.segment]

    def result(self, row: int, score: float) -> SearchResult:
        collection = self.collection_of(row)
        local = row - collection.start
        item_id = self._table(collection, "ids")[local]
        source = self._table(collection, "sources")[local] or None
        is_media = collection.modality in MEDIA_MODALITIES
        return SearchResult(row=row, id=item_id, modality=collection.modality,
                            space=collection.space, collection=collection.name, score=score,
                            source=source if is_media else None,
                            text=None if is_media else source)

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
               offset: int = 0) -> list[SearchResult]:
        """The ``k`` rows nearest the query (exactly one of text, image, audio, like, vector),
        best first, optionally only rows of ``modality``; ``offset`` pages."""
        given = {"text": text, "image": image, "audio": audio, "like": like, "vector": vector}
        chosen = [name for name, value in given.items() if value is not None]
        if len(chosen) != 1:
            raise ConfigError(f"give exactly one query (text, image, audio, like or vector), "
                              f"got {chosen or 'none'}")
        if like is not None:
            return self.search_vector(self.vector(int(like)), modality, k, offset,
                                      exclude=int(like))
        if vector is not None:
            return self.search_vector(np.asarray(vector, dtype=np.float32), modality, k, offset)
        if text is not None:
            query = self.encoder.embed_text(text)
        else:
            query = self.encoder.embed_file(image if image is not None else audio,
                                            "image" if image is not None else "audio")
        return self.search_vector(query, modality, k, offset)

    def search_vector(self, query: np.ndarray, modality: str | None = None, k: int = 10,
                      offset: int = 0, exclude: int | None = None) -> list[SearchResult]:
        """Search with a joint-space vector (d,): merged best-first over the collections."""
        check_page(k, offset)
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != self.manifest.dim:
            raise ConfigError(f"query has {query.shape[1]} dims; the index holds "
                              f"{self.manifest.dim}-d joint-space rows")
        collections = self._collections_for(modality)
        wanted = offset + k + (exclude is not None)
        scores, rows = [], []
        for collection in collections:
            found_scores, found = self._searcher(collection).search(query, min(wanted, collection.rows))
            keep = found[0] >= 0
            scores.append(found_scores[0][keep])
            rows.append(found[0][keep] + collection.start)
        merged_scores, merged_rows = np.concatenate(scores), np.concatenate(rows)
        order = np.argsort(-merged_scores, kind="stable")
        hits = [(int(merged_rows[i]), float(merged_scores[i])) for i in order
                if int(merged_rows[i]) != exclude]
        return [self.result(row, score) for row, score in hits[offset:offset + k]]

    def _collections_for(self, modality: str | None) -> list[Collection]:
        if modality in (None, "", "all", "any"):
            return list(self.manifest.collections)
        chosen = [c for c in self.manifest.collections if c.modality == modality]
        if not chosen:
            raise ConfigError(f"the index holds no '{modality}' rows; its modalities: "
                              f"{', '.join(self.modalities) or 'none'}")
        return chosen

    # -- description -----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What ``cmcr index info`` and ``GET /api/info`` show."""
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        return {"path": str(self.path), "rows": len(self), "dim": self.manifest.dim,
                "model": self.manifest.model, "model_digest": self.manifest.model_digest[:16],
                "spaces": {**self.manifest.spaces, **self._space_overrides},
                "modalities": self.modalities, "disk_bytes": size,
                "collections": [asdict(c) for c in self.manifest.collections]}


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


def _remove_index_files(directory: Path) -> None:
    """Delete only what an index manifest lists (never other files in the folder)."""
    try:
        manifest = read_manifest(directory)
    except StoreError:
        return
    for collection in manifest.collections:
        for path in directory.glob(f"{collection.segment}.*"):
            path.unlink()
    (directory / INDEX_FILE).unlink()


# -- building one segment ------------------------------------------------------------------------
def row_source(metadata: dict[str, Any] | None, item_id: str, modality: str) -> str:
    """What a row shows: its text (text rows) or its file (media rows): from the store's
    metadata, else the id itself (ids are paths relative to the input for ``cmcr embed``)."""
    keys = TEXT_KEYS if modality == "text" else SOURCE_KEYS
    for key in keys:
        value = (metadata or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return "" if modality == "text" else item_id


def sample_rows(store: EmbeddingStore, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct rows drawn at random (sorted reads), float32."""
    count = min(count, len(store))
    chosen = np.sort(np.random.default_rng(seed).choice(len(store), size=count, replace=False))
    return store.take(chosen)


def build_collection(stem: Path, store: EmbeddingStore,
                     project: Callable[[np.ndarray], np.ndarray], dim: int,
                     collection: Collection, *, index_type: str = "auto",
                     memory_budget: int | None = None,
                     target_recall: float = ann.DEFAULT_TARGET_RECALL, chunk_rows: int = 65536,
                     progress: bool = True) -> None:
    """Choose the collection's index (cmcr.serve.ann's rule), build and tune it, and rebuild it as
    HNSW when IVF cannot beat exact search on these rows; the outcome is recorded in ``collection``."""
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


def build_segment(stem: Path, store: EmbeddingStore, project: Callable[[np.ndarray], np.ndarray],
                  dim: int, plan: ann.IndexPlan, *, collection: Collection, target_recall: float,
                  chunk_rows: int, progress: bool) -> tuple[int | None, float | None]:
    """Project ``store`` chunk by chunk into a new FAISS index and its row tables; returns the
    tuned search breadth and the recall it reached (None, None for exact search)."""
    from tqdm.auto import tqdm

    collection.factory, collection.reason = plan.factory, plan.reason
    collection.search_parameter = plan.search_parameter
    index = ann.new_index(plan.factory, dim)
    if plan.train_rows:
        ann.train_index(index, project(sample_rows(store, plan.train_rows)))
    truth = None
    if plan.search_parameter:
        tuning = project(sample_rows(store, ann.TUNING_QUERIES, seed=1))
        truth = ann.ExactTopK(ann.perturbed_queries(tuning), ann.TUNING_K)
    ids, sources = StringTableWriter(Path(f"{stem}.ids")), StringTableWriter(Path(f"{stem}.sources"))
    bar = tqdm(total=len(store), unit="row", disable=not progress, dynamic_ncols=True,
               desc=f"index {collection.name} ({collection.modality} via {collection.space}, "
                    f"{plan.factory})")
    storage = ann.flat_storage(index, len(store))
    with bar:
        for start, rows, row_ids, metadata in store.iter_labelled_chunks(chunk_rows):
            joint = project(rows)
            if storage is not None:
                storage[start:start + len(joint)] = joint
            else:
                index.add(joint)
            if truth is not None:
                truth.update(start, joint)
            ids.extend(row_ids)
            sources.extend(row_source(m, i, collection.modality)
                           for m, i in zip(metadata or [None] * len(row_ids), row_ids))
            bar.update(len(rows))
    ids.close()
    sources.close()
    tuned = ann.tune_search(index, plan, truth, target_recall) if truth else (None, None)
    if ann.scans_most_lists(plan, tuned[0]):
        collection.reason += (f"; nprobe={tuned[0]} of {plan.lists} lists was needed for the "
                              "target recall, so this index is hardly faster than exact search "
                              "(try --index-type HNSW32, or a lower --target-recall)")
    ann.write_index(index, Path(f"{stem}.faiss"))
    return tuned

