"""AVE, Audio-Visual Event localisation (Tian et al. 2018): 4,143 10 s videos in 28 events.

Layout (AVE_Dataset.zip from the authors' GitHub YapengTian/AVE-ECCV18, confirmed)::

    ROOT/                          (the unzipped AVE_Dataset/)
      AVE/<VideoID>.mp4            the videos
      Annotations.txt              Category&VideoID&Quality&StartTime&EndTime (a header line)
      testSet.txt                  the 402 test videos, same '&'-separated fields

Protocols (cmcr.eval.protocols): ``event`` (default) gives each test video the frames at the
centre of every annotated event second (their embeddings averaged) and the event's stretch of
audio; ``middle-frame`` gives the frame at the middle of the clip and the whole audio track.
Decoding video needs PyAV.
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import (
    EvalDataset,
    class_name,
    keep_available,
    read_text,
    require_dir,
    require_file,
)
from cmcr.eval.media import AudioSegment, VideoFrame

FIELDS = ("Category", "VideoID", "Quality", "StartTime", "EndTime")
CLIP_SECONDS = 10.0  # every AVE video lasts 10 s


def read_split(path: Path) -> list[dict[str, str]]:
    """Rows of an AVE split file; a header line (starting with 'Category') is skipped."""
    require_file(path, "lines Category&VideoID&Quality&StartTime&EndTime")
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("Category&"):
            continue
        values = line.strip().split("&")
        if len(values) != len(FIELDS):
            raise InputError(f"{path}, line {number}: expected Category&VideoID&Quality&StartTime"
                             f"&EndTime, got {line.strip()!r}")
        for key in ("StartTime", "EndTime"):
            if not values[FIELDS.index(key)].strip().isdigit():
                raise InputError(f"{path}, line {number}: {key} must be whole seconds, got {line.strip()!r}")
        rows.append(dict(zip(FIELDS, values)))
    return rows


def event_seconds(row: dict[str, str]) -> range:
    """The annotated event's seconds; an empty event (StartTime = EndTime) keeps its first second."""
    start, end = int(row["StartTime"]), int(row["EndTime"])
    return range(start, max(end, start + 1))


def event_inputs(video: Path, row: dict[str, str]) -> tuple[tuple[VideoFrame, ...], AudioSegment]:
    seconds = event_seconds(row)
    frames = tuple(VideoFrame(video, second + 0.5) for second in seconds)
    return frames, AudioSegment(video, float(seconds.start), float(seconds.stop))


def protocol_notes(rows: list[dict[str, str]], protocol: str) -> list[str]:
    empty = sum(1 for r in rows if int(r["EndTime"]) <= int(r["StartTime"]))
    middle = CLIP_SECONDS / 2
    missed = sum(1 for r in rows if not int(r["StartTime"]) <= middle < int(r["EndTime"]))
    notes = [f"{empty} clip(s) annotate an empty event; their first second is used"] if empty else []
    if protocol == "middle-frame":
        notes.append(f"{missed} of {len(rows)} clips' annotated event does not cover the middle "
                     f"second ({middle:g} s): their frame may not show the event")
    return notes


def read_ave(root: Path, protocol: str = "event") -> EvalDataset:
    videos = require_dir(root / "AVE", "the AVE videos, AVE/<VideoID>.mp4")
    require_file(root / "Annotations.txt", "AVE's Annotations.txt (Category&VideoID&...)")
    rows = read_split(root / "testSet.txt")
    names = sorted({class_name(r["Category"]) for r in read_split(root / "Annotations.txt")})
    ids = [r["VideoID"] for r in rows]
    paths = [videos / f"{i}.mp4" for i in ids]
    if protocol == "middle-frame":
        images, audio = list(paths), list(paths)
    else:
        parts = [event_inputs(path, row) for path, row in zip(paths, rows)]
        images, audio = [frames for frames, _ in parts], [segment for _, segment in parts]
    kept, skipped = keep_available("ave", ids, {"video": paths}, str(videos))
    labels = [names.index(class_name(rows[i]["Category"])) if class_name(rows[i]["Category"]) in names
              else -1 for i in kept]
    return EvalDataset(name="ave", root=root, ids=[ids[i] for i in kept],
                       inputs={"image": [images[i] for i in kept], "audio": [audio[i] for i in kept]},
                       protocol=protocol, tasks=("retrieval",), labels=labels, class_names=names,
                       skipped=skipped,
                       notes=protocol_notes([rows[i] for i in kept], protocol))
