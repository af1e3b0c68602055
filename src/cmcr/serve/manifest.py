"""An index's manifest (``index.json``): what it records, and reading it the way store manifests
are read (cmcr.data.store.check_manifest): every key of the expected type and range, segment names
one plain file name inside the index folder, rows numbered without gap, and each segment's
files with the sha256 recorded when they were written.

A build writes ``index.json`` with ``complete: false`` first and sets it last: an index whose
build was killed says so, and ``cmcr index build`` resumes or replaces it (cmcr.serve.index).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cmcr.data.atomic import atomic_write_text
from cmcr.errors import CheckpointError, StoreError
from cmcr.data.atomic import file_sha256

INDEX_FILE = "index.json"
FORMAT_NAME = "cmcr-index"
FORMAT_VERSION = 1
# A segment's files, by suffix after its stem (the FAISS index, then its two string tables).
SEGMENT_FILES = ("faiss", "ids.bin", "ids.offsets.npy", "sources.bin", "sources.offsets.npy")
LABEL_FILES = ("labels.bin", "labels.offsets.npy")  # optional: each row's caption or label
MOMENTS_FILE = "moments.npy"  # optional: the score calibration (cmcr.serve.calibration)
SEGMENT_FILE = re.compile(r"^(segment-\d{5})\.")  # what a build writes (and may clean up)
SEARCH_PARAMETERS = {"nprobe": "IVF", "efSearch": "HNSW"}  # parameter -> the factory it needs


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
    sha256: dict[str, str] | None = None  # SEGMENT_FILES suffix -> digest; None: older index
    root: str | None = None  # the folder its rows' files are shown relative to
    labels: bool = False  # it has a labels table (older indexes: none)
    calibration_rows: int | None = None  # rows its score calibration was estimated on; None: none
    extra_sha256: dict[str, str] | None = None  # suffix -> digest of its optional files

    @property
    def extra_files(self) -> tuple[str, ...]:
        """The suffixes of its optional files: the labels table, the calibration moments."""
        return (LABEL_FILES if self.labels else ()) + \
            ((MOMENTS_FILE,) if self.calibration_rows else ())


@dataclass
class IndexManifest:
    """``index.json``: the model, the frozen spaces and the collections."""

    model: str
    model_digest: str
    dim: int
    spaces: dict[str, str] = field(default_factory=dict)  # model space -> frozen space spec
    collections: list[Collection] = field(default_factory=list)
    complete: bool = True  # False while its build runs (or after it was killed)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.collections)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **asdict(self)}




def model_digest(model_dir: str | Path) -> str:
    """sha256 of a connected model's weights: which model an index's rows were projected by."""
    weights = Path(model_dir) / "model.safetensors"
    try:
        return file_sha256(weights)
    except OSError as err:
        raise CheckpointError(f"{weights}: cannot read the model's weights ({err})") from None


def segment_path(directory: Path, segment: str, suffix: str) -> Path:
    return directory / f"{segment}.{suffix}"


def segment_digests(directory: Path, segment: str,
                    suffixes: tuple[str, ...] = SEGMENT_FILES) -> dict[str, str]:
    """The sha256 of each of a segment's files (recorded at build time)."""
    return {suffix: file_sha256(segment_path(directory, segment, suffix)) for suffix in suffixes}


def write_manifest(directory: Path, manifest: IndexManifest) -> None:
    atomic_write_text(directory / INDEX_FILE, json.dumps(manifest.to_json(), indent=2) + "\n")


def read_manifest(directory: Path) -> IndexManifest:
    """``index.json`` of ``directory``, checked key by key (StoreError naming file and key)."""
    path = directory / INDEX_FILE
    if not path.is_file():
        raise StoreError(f"{directory}: not a cmcr index (no {INDEX_FILE}; build one with "
                         "'cmcr index build')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or not UTF-8
        reason = "nested too deeply" if isinstance(err, RecursionError) else err
        raise StoreError(f"{path}: not a readable cmcr index manifest ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise StoreError(f"{path}: not a cmcr index manifest (format != {FORMAT_NAME!r})")
    if data.get("version") != FORMAT_VERSION:
        raise StoreError(f"{path}: index format version {_shown(data.get('version'))} is not "
                         f"supported (this cmcr reads version {FORMAT_VERSION})")
    body = {key: value for key, value in data.items() if key not in ("format", "version")}
    _check_keys(body, IndexManifest, path, "")
    _check_top(body, path)
    collections = [_collection(entry, number, path) for number, entry
                   in enumerate(body.pop("collections", []))]
    _check_layout(collections, path)
    return IndexManifest(**body, collections=collections)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_text(value: Any, optional: bool = False) -> bool:
    return (optional and value is None) or (isinstance(value, str) and value != "")


def plain_file_name(name: Any) -> bool:
    """One plain path component inside the index folder: no folder part, not '.', '..' or ''."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\x00" not in name)


def _check_keys(entry: Any, cls: type, path: Path, where: str) -> None:
    if not isinstance(entry, dict):
        raise StoreError(f"{path}: {where or 'the manifest'} must be a JSON object, got "
                         f"{type(entry).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(entry) - set(fields))
    if unknown:
        raise StoreError(f"{path}: unknown key '{where}{unknown[0]}'; valid keys: "
                         + ", ".join(sorted(fields)))
    missing = [name for name, f in fields.items() if name not in entry
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise StoreError(f"{path}: missing key '{where}{missing[0]}'")


def _check_top(body: dict[str, Any], path: Path) -> None:
    if not _is_text(body["model"]):
        raise StoreError(f"{path}: 'model' must be the model's path, got {_shown(body['model'])}")
    if not (isinstance(body["model_digest"], str)
            and re.fullmatch(r"[0-9a-f]{64}", body["model_digest"])):
        raise StoreError(f"{path}: 'model_digest' must be a sha256 (64 hex digits), got "
                         f"{_shown(body['model_digest'])}")
    if not (_is_count(body["dim"]) and body["dim"] > 0):
        raise StoreError(f"{path}: 'dim' must be a positive integer, got {_shown(body['dim'])}")
    spaces = body.get("spaces", {})
    if not (isinstance(spaces, dict) and all(_is_text(k) and _is_text(v)
                                             for k, v in spaces.items())):
        raise StoreError(f"{path}: 'spaces' must map model spaces to space specs (strings)")
    if not isinstance(body.get("collections", []), list):
        raise StoreError(f"{path}: 'collections' must be a list")
    if not isinstance(body.get("complete", True), bool):
        raise StoreError(f"{path}: 'complete' must be true or false, got "
                         f"{_shown(body['complete'])}")


def _collection(entry: Any, number: int, path: Path) -> Collection:
    """One ``collections`` entry, every key checked (names ``collections[N].KEY``)."""
    where = f"collections[{number}]."
    _check_keys(entry, Collection, path, where)
    collection = Collection(**entry)

    def bad(key: str, expected: str) -> StoreError:
        return StoreError(f"{path}: '{where}{key}' must be {expected}, got "
                          f"{_shown(getattr(collection, key))}")

    for key in ("name", "store", "space", "modality", "factory"):
        if not _is_text(getattr(collection, key)):
            raise bad(key, "a non-empty string")
    for key in ("frozen_space", "media", "root"):
        if not _is_text(getattr(collection, key), optional=True):
            raise bad(key, "a string or null")
    if not isinstance(collection.reason, str):
        raise bad("reason", "a string")
    if not plain_file_name(collection.segment):
        raise bad("segment", "a plain file name inside the index folder")
    if not (_is_count(collection.rows) and collection.rows > 0):
        raise bad("rows", "a positive integer")
    if not _is_count(collection.start):
        raise bad("start", "a whole number")
    _check_search(collection, bad)
    _check_extras(collection, bad)
    if collection.sha256 is not None and not _digests(collection.sha256, SEGMENT_FILES):
        raise bad("sha256", f"a sha256 for each of {', '.join(SEGMENT_FILES)}")
    return collection


def _digests(value: Any, suffixes: tuple[str, ...]) -> bool:
    return (isinstance(value, dict) and set(value) == set(suffixes)
            and all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in value.values()))


def _check_extras(collection: Collection, bad: Any) -> None:
    """The optional files: labels (true/false), calibration rows (null or positive), and their
    sha256 (null only in an index whose digests were never recorded)."""
    if not isinstance(collection.labels, bool):
        raise bad("labels", "true or false")
    sampled = collection.calibration_rows
    if sampled is not None and not (_is_count(sampled) and sampled > 0):
        raise bad("calibration_rows", "null or a positive integer")
    expected = collection.extra_files
    if collection.extra_sha256 is not None and not _digests(collection.extra_sha256, expected):
        raise bad("extra_sha256", f"a sha256 for each of {', '.join(expected) or 'no file'}")


def _check_search(collection: Collection, bad: Any) -> None:
    """The tuned search breadth: a parameter the factory has, a positive value, a recall."""
    parameter = collection.search_parameter
    if parameter is not None and parameter not in SEARCH_PARAMETERS:
        raise bad("search_parameter", f"null or one of {', '.join(SEARCH_PARAMETERS)}")
    if parameter is not None and SEARCH_PARAMETERS[parameter] not in collection.factory:
        raise bad("search_parameter", f"null for a '{collection.factory}' index "
                  f"({parameter} needs a {SEARCH_PARAMETERS[parameter]} factory)")
    value = collection.search_value
    if value is not None and not (_is_count(value) and value > 0):
        raise bad("search_value", "null or a positive integer")
    recall = collection.tuned_recall
    if recall is not None and not (isinstance(recall, (int, float)) and not isinstance(recall, bool)
                                   and 0 <= recall <= 1):
        raise bad("tuned_recall", "null or a number between 0 and 1")


def _check_layout(collections: list[Collection], path: Path) -> None:
    """Segments are distinct, and global rows run through the collections without gap."""
    seen: set[str] = set()
    start = 0
    for number, collection in enumerate(collections):
        if collection.segment in seen:
            raise StoreError(f"{path}: 'collections[{number}].segment' {collection.segment!r} is "
                             "used by another collection too")
        seen.add(collection.segment)
        if collection.start != start:
            raise StoreError(f"{path}: 'collections[{number}].start' is {collection.start}, but "
                             f"the collections before it hold {start} rows")
        start += collection.rows


def remove_segment_files(directory: Path, keep: set[str] = frozenset()) -> None:
    """Delete what a build writes (``segment-NNNNN.*``, finished or half-written) except the
    segments in ``keep``; never any other file of the folder."""
    for path in directory.iterdir():
        found = SEGMENT_FILE.match(path.name)
        if found and found.group(1) not in keep and path.is_file():
            path.unlink()
