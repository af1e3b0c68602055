"""MUSIC-Solo localisation test frames (Hu et al. 2020, "Discriminative sounding objects
localization", DSOL), as that repository publishes them.

Layout (DTaoo/Discriminative-Sounding-Objects-Localization: ``music-exp/solotest.json``, frames
cut by ``data/cut_videos.py`` at 4 fps, the clips listed in ``solo_testing.txt``)::

    ROOT/
      solotest.json       {"<video>_0_1000/frame_NNN/NNNNN.jpg": {"bbox": [{"box": [x, y, w, h]
                           (pixels), "normbox": [x, y, w, h] (fractions), "category_id": 13}, ...],
                           "wdith": 640, "height": 360}, ...}   ("wdith" is the file's spelling)
      video_frames/<video>_0_1000/frame_NNN/NNNNN.jpg      (or the same paths under ROOT/)
      audio/<video>_0_1000.flac                             (or .wav: the clip's audio track)

Boxes are x, y, width, height and are converted to corners here, checked against the pixel box
and the frame size; no box is ever read as corners. Each frame's sound is second NNN of its
clip (DSOL pairs ``frame_NNN`` with the 1 s audio segment NNN). About 8% of the published frames
have ``"bbox": []``: localisation skips them, as DSOL's ``cal_ciou`` does, and says how many.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cmcr.errors import InputError
from cmcr.eval.datasets.base import (
    EvalDataset,
    keep_available,
    read_json,
    require_dir,
    xywh_to_xyxy,
)
from cmcr.eval.media import AudioSegment

FORMAT = ('a JSON object {"<video>/frame_NNN/NNNNN.jpg": {"bbox": [{"box": [x, y, w, h], '
          '"normbox": [x, y, w, h], "category_id": N}], "wdith": W, "height": H}}')
FRAME_KEY = re.compile(r"([^/]+)/frame_(\d+)/([^/]+\.jpg)")
AUDIO_SUFFIXES = (".flac", ".wav")
# DSOL music-exp/eval.py's category ids (the seven instruments of its solo and duet test sets)
INSTRUMENTS = {1: "cello", 3: "acoustic guitar", 8: "saxophone", 10: "trumpet", 11: "violin",
               12: "flute", 13: "accordion"}
PIXEL_TOLERANCE = 1.5  # normbox x size vs box, in pixels (rounding of the published numbers)


def frame_boxes(entry: Any, where: str) -> tuple[list[tuple[float, float, float, float]], int]:
    """(corner boxes as fractions, the first box's category id or -1) of one frame's entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("bbox"), list):
        raise InputError(f"{where}: expected {{\"bbox\": [...], \"wdith\": W, \"height\": H}}")
    size = (entry.get("wdith", entry.get("width")), entry.get("height"))
    boxes, category = [], -1
    for number, item in enumerate(entry["bbox"]):
        place = f"{where}, box {number}"
        if not isinstance(item, dict) or "normbox" not in item:
            raise InputError(f"{place}: expected {{\"box\", \"normbox\", \"category_id\"}}")
        corners = xywh_to_xyxy(item["normbox"], place)
        check_pixels(item, size, place)
        boxes.append(corners)
        category = int(item.get("category_id", -1)) if number == 0 else category
    return boxes, category


def check_pixels(item: dict[str, Any], size: tuple[Any, Any], where: str) -> None:
    """Refuse a normbox that is not the pixel box divided by the frame size."""
    if "box" not in item or not all(isinstance(v, (int, float)) for v in size):
        return
    width, height = size
    scale = (width, height, width, height)
    for pixel, fraction, extent in zip(item["box"], item["normbox"], scale):
        if abs(float(fraction) * extent - float(pixel)) > PIXEL_TOLERANCE:
            raise InputError(f"{where}: normbox {item['normbox']} is not box {item['box']} over the "
                             f"frame size {width} x {height}")


def clip_audio(folder: Path, video: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        if (folder / f"{video}{suffix}").is_file():
            return folder / f"{video}{suffix}"
    return folder / f"{video}{AUDIO_SUFFIXES[0]}"


def read_music_solo(root: Path, protocol: str = "dsol") -> EvalDataset:
    path = root / "solotest.json"
    entries = read_json(path, FORMAT)
    if not isinstance(entries, dict):
        raise InputError(f"{path}: expected {FORMAT}")
    frames = root / "video_frames" if (root / "video_frames").is_dir() else root
    audio = require_dir(root / "audio", "each clip's audio, audio/<video>_0_1000.flac")
    ids, images, sounds, boxes, labels = [], [], [], [], []
    for key, entry in entries.items():
        match = FRAME_KEY.fullmatch(key)
        if match is None:
            raise InputError(f"{path}: key {key!r} is not <video>/frame_NNN/NNNNN.jpg")
        frame_boxes_, category = frame_boxes(entry, f"{path}, {key}")
        second = int(match.group(2))
        ids.append(key)
        images.append(frames / key)
        sounds.append(AudioSegment(clip_audio(audio, match.group(1)), float(second), second + 1.0))
        boxes.append(frame_boxes_)
        labels.append(category)
    return assemble(root, protocol, ids, images, sounds, boxes, labels)


def assemble(root: Path, protocol: str, ids: list[str], images: list[Path], sounds: list[AudioSegment],
             boxes: list[list[tuple[float, float, float, float]]], labels: list[int]) -> EvalDataset:
    """The frames whose files exist; labels index the instruments present (-1: no box)."""
    kept, skipped = keep_available("music-solo", ids, {"image": images, "audio": sounds}, str(root))
    empty = sum(1 for i in kept if not boxes[i])
    categories = sorted({labels[i] for i in kept} - {-1})
    notes = [f"{empty} of {len(kept)} frames have no box: localisation skips them (DSOL cal_ciou)"] \
        if empty else []
    return EvalDataset(name="music-solo", root=root, ids=[ids[i] for i in kept],
                       inputs={"image": [images[i] for i in kept], "audio": [sounds[i] for i in kept]},
                       protocol=protocol, tasks=("retrieval", "localization"),
                       labels=[categories.index(labels[i]) if labels[i] != -1 else -1 for i in kept],
                       class_names=[INSTRUMENTS.get(k, f"category {k}") for k in categories],
                       boxes=[boxes[i] for i in kept], box_consensus=1,
                       skipped=skipped, notes=notes)
