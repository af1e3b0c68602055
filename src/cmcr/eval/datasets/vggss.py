"""VGG-Sound Sources (VGG-SS, Chen et al. 2021): 5,158 VGGSound clips with boxes on one frame.

Layout (LVS "Localizing Visual Sounds the Hard Way" / EZ-VSL test code, confirmed: frames and
16 kHz audio extracted by the user, boxes in vggss.json)::

    ROOT/
      frames/<file>.jpg           the annotated frame of each clip (the 125th frame at 25 fps)
      audio/<file>.wav            the clip's 10 s of audio
      metadata/vggss.json         [{"file": "<file>", "class": "<label>",
                                    "bbox": [[x0, y0, x1, y1], ...]}, ...]  (fractions of the frame)

``<file>`` is ``<youtube_id>_<start in s, 6 digits>``. Entries without both files are skipped and
reported (YouTube clips disappear), as EZ-VSL intersects the list with the files present. Boxes
are corners; one inverted while inside the image (which is how x, y, width, height would read)
is refused. The published file holds 12 boxes with a corrupt corner (-2.9e16) and 6 of zero
width or height: like EZ-VSL, they are clipped to the image, cover nothing, and are counted in
the result's notes. The
``class`` of each entry is its label (221 classes), so ``--limit`` subsets are stratified by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcr.errors import InputError
from cmcr.eval.datasets.base import (
    EvalDataset,
    empty_box_count,
    keep_available,
    read_json,
    require_dir,
    xyxy_box,
)

BOX_JSON_FORMAT = 'a JSON list of {"file": ID, "class": LABEL, "bbox": [[x0, y0, x1, y1], ...]}'
Box = tuple[float, float, float, float]


def read_box_json(path: Path) -> list[dict[str, Any]]:
    """Entries of a VGG-SS style box file, checked (boxes as corner tuples)."""
    entries = read_json(path, BOX_JSON_FORMAT)
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected {BOX_JSON_FORMAT}")
    checked = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "file" not in entry or not isinstance(entry.get("bbox"), list):
            raise InputError(f"{path}: entry {number} lacks 'file' or 'bbox'; expected {BOX_JSON_FORMAT}")
        where = f"{path}, entry {number} ({entry['file']})"
        checked.append({**entry, "bbox": [xyxy_box(box, where) for box in entry["bbox"]]})
    return checked


def vggss_boxes(path: Path) -> dict[str, list[Box]]:
    """file id -> its boxes, from ``vggss.json``."""
    return {str(entry["file"]): entry["bbox"] for entry in read_box_json(path)}


def read_vggss(root: Path, protocol: str = "ezvsl") -> EvalDataset:
    frames = require_dir(root / "frames", "one annotated frame per clip (frames/<id>.jpg)")
    audio = require_dir(root / "audio", "one audio clip per item (audio/<id>.wav)")
    entries = read_box_json(root / "metadata" / "vggss.json")
    ids = [str(e["file"]) for e in entries]
    paths = {"image": [frames / f"{i}.jpg" for i in ids], "audio": [audio / f"{i}.wav" for i in ids]}
    kept, skipped = keep_available("vggss", ids, paths, f"{frames} and {audio}")
    boxes = [entries[i]["bbox"] for i in kept]
    classes = sorted({str(entries[i].get("class", "")) for i in kept})
    labels = [classes.index(str(entries[i].get("class", ""))) for i in kept]
    empty = empty_box_count(boxes)
    notes = [f"{empty} box(es) cover no area (corrupt corners), as in EZ-VSL"] if empty else []
    return EvalDataset(name="vggss", root=root, ids=[ids[i] for i in kept],
                       inputs={m: [p[i] for i in kept] for m, p in paths.items()},
                       protocol=protocol, tasks=("retrieval", "localization"), labels=labels,
                       class_names=classes,
                       boxes=boxes, box_consensus=1, skipped=skipped,
                       notes=notes)
