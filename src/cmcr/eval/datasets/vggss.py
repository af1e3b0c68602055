"""VGG-Sound Sources (VGG-SS, Chen et al. 2021): 5,158 VGGSound clips with boxes on one frame.

Layout (LVS "Localizing Visual Sounds the Hard Way" / EZ-VSL test code, confirmed: frames and
16 kHz audio extracted by the user, boxes in vggss.json)::

    ROOT/
      frames/<file>.jpg           the annotated frame of each clip (the 125th frame at 25 fps)
      audio/<file>.wav            the clip's 10 s of audio
      metadata/vggss.json         [{"file": "<file>", "class": "<label>",
                                    "bbox": [[x0, y0, x1, y1], ...]}, ...]  (fractions of the frame)

``<file>`` is ``<youtube_id>_<start in s, 6 digits>``. Entries without both files are skipped and
reported (YouTube clips disappear), as EZ-VSL intersects the list with the files present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, keep_available, read_json, require_dir

BOX_JSON_FORMAT = 'a JSON list of {"file": ID, "class": LABEL, "bbox": [[x0, y0, x1, y1], ...]}'


def read_box_json(path: Path) -> list[dict[str, Any]]:
    """Entries of a VGG-SS style box file, checked."""
    entries = read_json(path, BOX_JSON_FORMAT)
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected {BOX_JSON_FORMAT}")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "file" not in entry or "bbox" not in entry:
            raise InputError(f"{path}: entry {number} lacks 'file' or 'bbox'; expected {BOX_JSON_FORMAT}")
        if any(len(box) != 4 for box in entry["bbox"]):
            raise InputError(f"{path}: entry {number} ({entry['file']}): each box needs 4 numbers")
    return entries


def read_boxed_pairs(name: str, root: Path, box_file: Path, tasks: tuple[str, ...]) -> EvalDataset:
    """frames/<id>.jpg + audio/<id>.wav + a VGG-SS style box file -> a dataset with boxes."""
    frames = require_dir(root / "frames", "one annotated frame per clip (frames/<id>.jpg)")
    audio = require_dir(root / "audio", "one audio clip per item (audio/<id>.wav)")
    entries = read_box_json(box_file)
    ids = [str(e["file"]) for e in entries]
    paths = {"image": [frames / f"{i}.jpg" for i in ids], "audio": [audio / f"{i}.wav" for i in ids]}
    kept, skipped = keep_available(name, ids, paths, f"{frames} and {audio}")
    boxes = [[tuple(float(v) for v in box) for box in entries[i]["bbox"]] for i in kept]
    return EvalDataset(name=name, root=root, ids=[ids[i] for i in kept],
                       inputs={m: [p[i] for i in kept] for m, p in paths.items()}, tasks=tasks,
                       boxes=boxes, box_consensus=1, skipped=skipped)


def read_vggss(root: Path) -> EvalDataset:
    return read_boxed_pairs("vggss", root, root / "metadata" / "vggss.json",
                            ("retrieval", "localization"))
