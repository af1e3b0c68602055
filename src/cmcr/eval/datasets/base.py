"""What every evaluation reader returns, and the small file checks they share.

A reader turns a dataset folder in its published layout into an :class:`EvalDataset`: item ids,
the inputs of each modality (file paths, or store ids for precomputed spaces), and whatever the
tasks need (labels and class names, captions, boxes, matched/unmatched flags). Readers never
decode media: the spaces do, with cmcr's fixed input protocol.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cmcr.errors import InputError


@dataclass
class EvalDataset:
    """One benchmark's test items. Lists are aligned with ``ids``."""

    name: str
    root: Path
    ids: list[str]
    inputs: dict[str, list[Any]]  # modality -> one input per item (a path or a store id)
    tasks: tuple[str, ...]
    labels: list[int] | None = None
    class_names: list[str] | None = None
    captions: list[list[str]] | None = None  # several captions per item
    boxes: list[list[tuple[float, float, float, float]]] | None = None  # (x0, y0, x1, y1) in [0, 1]
    box_consensus: int = 1  # 2: Flickr-SoundNet's two-annotator consensus map
    matched: list[bool] | None = None  # counterfactual sets: does this sound belong to this image?
    skipped: list[str] = field(default_factory=list)  # listed items whose files are absent

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, count: int) -> "EvalDataset":
        """The first ``count`` items (a fixed, deterministic subset for quick runs)."""
        def cut(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else values[:count]
        return EvalDataset(self.name, self.root, self.ids[:count],
                           {m: v[:count] for m, v in self.inputs.items()}, self.tasks,
                           cut(self.labels), self.class_names, cut(self.captions), cut(self.boxes),
                           self.box_consensus, cut(self.matched), self.skipped)


def require_dir(path: Path, expected: str) -> Path:
    """``path`` if it is a directory, else an InputError naming it and what belongs there."""
    if not path.is_dir():
        raise InputError(f"{path}: folder not found; expected {expected}")
    return path


def require_file(path: Path, expected: str) -> Path:
    """``path`` if it is a file, else an InputError naming it and what it should hold."""
    if not path.is_file():
        raise InputError(f"{path}: file not found; expected {expected}")
    return path


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read ({err})") from None


def read_csv(path: Path, columns: Iterable[str], expected: str, *, delimiter: str = ",",
             header: bool = True) -> list[dict[str, str]]:
    """Rows of a CSV with a header holding ``columns`` (or, ``header=False``, named by them)."""
    require_file(path, expected)
    columns = list(columns)
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    reader = csv.DictReader(lines, delimiter=delimiter, fieldnames=None if header else columns)
    try:
        rows = list(reader)
    except csv.Error as err:
        raise InputError(f"{path}: malformed CSV ({err})") from None
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected {expected} "
                         f"(found columns {reader.fieldnames})")
    for number, row in enumerate(rows, 2 if header else 1):
        if any(row.get(c) is None for c in columns):
            raise InputError(f"{path}, line {number}: too few fields; expected {', '.join(columns)}")
    return rows


def read_json(path: Path, expected: str) -> Any:
    require_file(path, expected)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); expected {expected}") from None


def find_existing(folder: Path, stems: Iterable[str], suffixes: Iterable[str]) -> Path | None:
    """The first ``folder/stem+suffix`` that exists."""
    for stem in stems:
        for suffix in suffixes:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def keep_available(name: str, ids: list[str], paths: dict[str, list[Path]],
                   where: str) -> tuple[list[int], list[str]]:
    """Indices of items whose files all exist, and the skipped ids; an error if none exist.

    Benchmarks built from YouTube lose videos over time; like EZ-VSL, evaluation runs on the
    listed items still present, and the result says how many were skipped.
    """
    kept, skipped = [], []
    for index, item_id in enumerate(ids):
        if all(files[index].is_file() for files in paths.values()):
            kept.append(index)
        else:
            skipped.append(item_id)
    if not kept:
        first = {m: str(files[0]) for m, files in paths.items() if files}
        raise InputError(f"{name}: none of the {len(ids)} listed items has its files in {where} "
                         f"(e.g. {first})")
    return kept, skipped


def class_name(text: str) -> str:
    """A label as it reads in a prompt: underscores to spaces ('chirping_birds' -> 'chirping birds')."""
    return text.replace("_", " ").strip()
