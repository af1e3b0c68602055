"""AVE, Audio-Visual Event localisation (Tian et al. 2018): 4,143 10 s videos in 28 events.

Layout (AVE_Dataset.zip from the authors' GitHub YapengTian/AVE-ECCV18, confirmed)::

    ROOT/                          (the unzipped AVE_Dataset/)
      AVE/<VideoID>.mp4            the videos
      Annotations.txt              Category&VideoID&Quality&StartTime&EndTime (a header line)
      testSet.txt                  the 402 test videos, same '&'-separated fields

For audio <-> image retrieval each test video gives one image (its middle frame) and its whole
audio track (cropped by the audio space's fixed rule); decoding video needs PyAV.
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, class_name, keep_available, read_text, require_dir, require_file

FIELDS = ("Category", "VideoID", "Quality", "StartTime", "EndTime")


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
        rows.append(dict(zip(FIELDS, values)))
    return rows


def read_ave(root: Path) -> EvalDataset:
    videos = require_dir(root / "AVE", "the AVE videos, AVE/<VideoID>.mp4")
    require_file(root / "Annotations.txt", "AVE's Annotations.txt (Category&VideoID&...)")
    rows = read_split(root / "testSet.txt")
    names = sorted({class_name(r["Category"]) for r in read_split(root / "Annotations.txt")})
    ids = [r["VideoID"] for r in rows]
    paths = [videos / f"{i}.mp4" for i in ids]
    kept, skipped = keep_available("ave", ids, {"video": paths}, str(videos))
    labels = [names.index(class_name(rows[i]["Category"])) if class_name(rows[i]["Category"]) in names
              else -1 for i in kept]
    return EvalDataset(name="ave", root=root, ids=[ids[i] for i in kept],
                       inputs={"image": [paths[i] for i in kept], "audio": [paths[i] for i in kept]},
                       tasks=("retrieval",), labels=labels, class_names=names, skipped=skipped)
