"""AudioCaps (Kim et al. 2019) test split: 975 AudioSet clips with five captions each.

Layout (the captions are the authors' CSV, cdjkim/audiocaps ``dataset/test.csv``: header
``audiocap_id,youtube_id,start_time,caption``, CRLF lines, captions holding a comma in double
quotes; ``dataset2.0/test.csv`` is the same with LF lines). The audio must be fetched from YouTube
by the user, so its naming is not standardised; the reader accepts the common forms::

    ROOT/
      test.csv                 one row per caption
      audio/test/<name>.wav    or audio/<name>.wav (.wav, .flac or .mp3), <name> one of
                               Y<youtube_id>_<start>.000_<end>.000   (AudioSet's naming)
                               <youtube_id>_<start>.000_<end>.000, <youtube_id>_<start>[.000]
                               Y<youtube_id>, <youtube_id>, <audiocap_id>

Rows are grouped into clips by (youtube_id, start_time), in order of first appearance; listed
clips whose audio is absent are skipped and reported.
"""

from __future__ import annotations

import re
from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, keep_available, read_csv, require_dir

CSV_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
SUFFIXES = (".wav", ".flac", ".mp3")
# <11-character YouTube id>_<start seconds>[_<end seconds>]
TIMED_STEM = re.compile(r"([A-Za-z0-9_-]{11})_(\d+(?:\.\d+)?)(?:_(\d+(?:\.\d+)?))?")


def audio_folder(root: Path) -> Path:
    test_dir = root / "audio" / "test"
    return test_dir if test_dir.is_dir() else require_dir(
        root / "audio", "the AudioCaps test clips in audio/test/ or audio/")


def index_folder(folder: Path) -> tuple[dict[str, Path], dict[tuple[str, float], Path]]:
    """The folder's audio files by stem, and by (youtube id, start second) where the stem has one
    (with or without AudioSet's leading 'Y', which is also a possible first id character)."""
    by_stem: dict[str, Path] = {}
    by_time: dict[tuple[str, float], Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        by_stem.setdefault(path.stem, path)
        readings = [path.stem] + ([path.stem[1:]] if path.stem.startswith("Y") else [])
        for stem in readings:
            match = TIMED_STEM.fullmatch(stem)
            if match:
                by_time.setdefault((match.group(1), float(match.group(2))), path)
    return by_stem, by_time


def start_seconds(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{where}: start_time must be seconds, got {value!r}") from None


def clip_id(youtube_id: str, start: float) -> str:
    return f"{youtube_id}_{int(start) if start.is_integer() else start}"


def find_clip(youtube_id: str, start: float, audiocap_ids: list[str],
              index: tuple[dict[str, Path], dict[tuple[str, float], Path]]) -> Path | None:
    """The clip's file: named by id and start time first, then by id alone, then by caption id."""
    by_stem, by_time = index
    if (youtube_id, start) in by_time:
        return by_time[(youtube_id, start)]
    for stem in (f"Y{youtube_id}", youtube_id, *audiocap_ids):
        if stem in by_stem:
            return by_stem[stem]
    return None


def read_audiocaps(root: Path, protocol: str = "standard") -> EvalDataset:
    csv_path = root / "test.csv"
    rows = read_csv(csv_path, CSV_COLUMNS, "AudioCaps' test.csv: audiocap_id,youtube_id,start_time,caption")
    folder = audio_folder(root)
    index = index_folder(folder)
    clips: dict[tuple[str, float], list[dict[str, str]]] = {}
    for number, row in enumerate(rows, 2):
        start = start_seconds(row["start_time"].strip(), f"{csv_path}, line {number}")
        clips.setdefault((row["youtube_id"].strip(), start), []).append(row)
    ids, paths, captions = [], [], []
    for (youtube_id, start), group in clips.items():
        found = find_clip(youtube_id, start, [r["audiocap_id"].strip() for r in group], index)
        ids.append(clip_id(youtube_id, start))
        paths.append(found or folder / f"Y{youtube_id}_{start:.3f}_{start + 10:.3f}.wav")
        captions.append([r["caption"].strip() for r in group])
    kept, skipped = keep_available("audiocaps", ids, {"audio": paths}, str(folder))
    return EvalDataset(name="audiocaps", root=root, ids=[ids[i] for i in kept],
                       inputs={"audio": [paths[i] for i in kept]}, protocol=protocol,
                       tasks=("text-retrieval",),
                       captions=[captions[i] for i in kept], skipped=skipped)
