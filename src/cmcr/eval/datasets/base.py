"""What every evaluation reader returns, and the small file checks they share.

A reader turns a dataset folder in its published layout into an :class:`EvalDataset`: item ids,
the inputs of each modality (file paths, parts of files from :mod:`cmcr.eval.media`, or store
ids for precomputed spaces), and whatever the tasks need (labels and class names, captions,
boxes, matched/unmatched flags). Readers never decode media: the spaces do, with cmcr's fixed
input protocol.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Hashable, Iterable, Sequence

from cmcr.errors import InputError

BOX_TOLERANCE = 1e-3  # fractions may overshoot 0 or 1 by rounding


@dataclass
class EvalDataset:
    """One benchmark's test items. Lists are aligned with ``ids``."""

    name: str
    root: Path
    ids: list[str]
    inputs: dict[str, list[Any]]  # modality -> one input per item (a path, a media part, a store id)
    tasks: tuple[str, ...]
    labels: list[int] | None = None
    class_names: list[str] | None = None
    captions: list[list[str]] | None = None  # several captions per item
    boxes: list[list[tuple[float, float, float, float]]] | None = None  # (x0, y0, x1, y1) in [0, 1]
    box_consensus: int = 1  # 2: Flickr-SoundNet's two-annotator consensus map
    matched: list[bool] | None = None  # counterfactual sets: does this sound belong to this image?
    skipped: list[str] = field(default_factory=list)  # listed items whose files are absent
    protocol: str = "standard"  # the protocol the reader followed (cmcr.eval.protocols)
    notes: list[str] = field(default_factory=list)  # what the reader dropped or changed, for the record

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: Sequence[int]) -> EvalDataset:
        """The items at ``indices``, in that order (every aligned list cut alike)."""
        def cut(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]
        return replace(self, ids=[self.ids[i] for i in indices],
                       inputs={m: [v[i] for i in indices] for m, v in self.inputs.items()},
                       labels=cut(self.labels), captions=cut(self.captions), boxes=cut(self.boxes),
                       matched=cut(self.matched), skipped=list(self.skipped), notes=list(self.notes))

    def subset(self, count: int) -> EvalDataset:
        """``count`` items stratified by ``matched`` (counterfactual sets) or by label, else evenly
        spaced through the list: a fixed, deterministic subset for quick runs."""
        strata = self.matched if self.matched is not None else self.labels
        chosen = stratified_indices(strata, len(self), count)
        subset = self.take(chosen)
        if len(chosen) < len(self):
            basis = "stratified by matched/unmatched" if self.matched is not None else \
                "stratified by class" if self.labels is not None else "evenly spaced (no labels)"
            subset.notes.append(f"--limit {count}: {len(chosen)} of {len(self)} items, {basis}")
        return subset


def stratified_indices(strata: Sequence[Hashable] | None, total: int, count: int) -> list[int]:
    """Indices of ``count`` of ``total`` items: round-robin over the strata (each in list order),
    or evenly spaced when there are none; returned in list order."""
    if count >= total:
        return list(range(total))
    if strata is None:
        return [(k * total) // count for k in range(count)]
    groups: dict[Hashable, list[int]] = {}
    for index, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(index)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < count:
        for members in groups.values():
            if depth < len(members) and len(chosen) < count:
                chosen.append(members[depth])
        depth += 1
    return sorted(chosen)


def check_unique_class_names(names: Sequence[str], source: str) -> None:
    """Refuse class names that read alike (case and spacing ignored, as CLIP's tokenizer
    lowercases): such classes get identical prototypes and their items can never be right."""
    seen: dict[str, int] = {}
    clashes = []
    for index, name in enumerate(names):
        key = " ".join(str(name).split()).casefold()
        if key in seen:
            clashes.append(f"{seen[key]} and {index} are both '{name}'")
        seen.setdefault(key, index)
    if clashes:
        raise InputError(f"{source}: duplicate class names ({'; '.join(clashes[:5])}"
                         f"{'; ...' if len(clashes) > 5 else ''}); give each class its own name")


# -- boxes ---------------------------------------------------------------------------------------
def xyxy_box(values: Sequence[Any], where: str) -> tuple[float, float, float, float]:
    """A box given as (x0, y0, x1, y1) fractions, checked: four finite numbers, and no corner
    inverted while all lie in [0, 1] (that is what x, y, width, height read as corners looks like).

    Values far outside [0, 1] (VGG-SS's json holds a few corrupt ones) pass; boxes_to_map clips
    them to an empty region, as EZ-VSL does.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{where}: a box needs four numbers x0, y0, x1, y1, got {values!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InputError(f"{where}: box {list(values)} holds a non-finite number")
    in_range = all(-BOX_TOLERANCE <= v <= 1 + BOX_TOLERANCE for v in (x0, y0, x1, y1))
    if in_range and (x1 < x0 or y1 < y0):
        raise InputError(f"{where}: box {list(values)} has x1 < x0 or y1 < y0; it reads like "
                         "x, y, width, height, but this file's boxes must be corners x0, y0, x1, y1")
    return x0, y0, x1, y1


def xywh_to_xyxy(box: Sequence[float], where: str) -> tuple[float, float, float, float]:
    """(x, y, width, height) fractions -> corners, refusing boxes that leave the image."""
    try:
        x, y, width, height = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"{where}: a box needs four numbers x, y, width, height, got {box!r}") from None
    if min(x, y, width, height) < -BOX_TOLERANCE or x + width > 1 + BOX_TOLERANCE \
            or y + height > 1 + BOX_TOLERANCE:
        raise InputError(f"{where}: box {list(box)} is not x, y, width, height inside the image "
                         "(x + width and y + height must be <= 1)")
    return x, y, x + width, y + height


def empty_box_count(boxes: Iterable[Sequence[tuple[float, float, float, float]]]) -> int:
    """Boxes that cover no area once clipped to the image (corrupt or inverted corners)."""
    def clip(value: float) -> float:
        return min(max(value, 0.0), 1.0)
    return sum(1 for item in boxes for x0, y0, x1, y1 in item
               if clip(x1) <= clip(x0) or clip(y1) <= clip(y0))


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


def keep_available(name: str, ids: list[str], paths: dict[str, list[Any]],
                   where: str) -> tuple[list[int], list[str]]:
    """Indices of items whose files all exist, and the skipped ids; an error if none exist.

    Benchmarks built from YouTube lose videos over time; like EZ-VSL, evaluation runs on the
    listed items still present, and the result says how many were skipped.
    """
    kept, skipped = [], []
    for index, item_id in enumerate(ids):
        if all(present(files[index]) for files in paths.values()):
            kept.append(index)
        else:
            skipped.append(item_id)
    if not kept:
        first = {m: str(files[0]) for m, files in paths.items() if files}
        raise InputError(f"{name}: none of the {len(ids)} listed items has its files in {where} "
                         f"(e.g. {first})")
    return kept, skipped


def present(item: Any) -> bool:
    """Whether a path, a media part (``exists()``) or each member of a group is on disk."""
    if isinstance(item, (list, tuple)):
        return bool(item) and all(present(member) for member in item)
    if hasattr(item, "exists") and not isinstance(item, Path):
        return bool(item.exists())
    return Path(item).is_file()


def class_name(text: str) -> str:
    """A label as it reads in a prompt: underscores to spaces ('chirping_birds' -> 'chirping birds')."""
    return text.replace("_", " ").strip()
