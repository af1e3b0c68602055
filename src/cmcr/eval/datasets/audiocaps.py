"""AudioCaps (Kim et al. 2019) test split: 975 AudioSet clips with five captions each.

Layout (the captions are the authors' GitHub CSV, confirmed; the audio must be fetched from
YouTube by the user, so its file naming is *not* standardised — the reader accepts the common
forms)::

    ROOT/
      test.csv                 audiocap_id,youtube_id,start_time,caption   (one row per caption)
      audio/test/<name>.wav    or audio/<name>.wav, with <name> one of
                               <youtube_id>_<start_time>, Y<youtube_id>, <youtube_id>, <audiocap_id>
                               (.wav, .flac or .mp3)

Rows are grouped into clips by (youtube_id, start_time), in order of first appearance; listed
clips whose audio is absent are skipped and reported.
"""

from __future__ import annotations

from pathlib import Path

from cmcr.eval.datasets.base import EvalDataset, find_existing, keep_available, read_csv, require_dir

CSV_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
SUFFIXES = (".wav", ".flac", ".mp3")


def audio_folder(root: Path) -> Path:
    test_dir = root / "audio" / "test"
    return test_dir if test_dir.is_dir() else require_dir(
        root / "audio", "the AudioCaps test clips in audio/test/ or audio/")


def read_audiocaps(root: Path) -> EvalDataset:
    rows = read_csv(root / "test.csv", CSV_COLUMNS,
                    "AudioCaps' test.csv: audiocap_id,youtube_id,start_time,caption")
    folder = audio_folder(root)
    clips: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        clips.setdefault((row["youtube_id"], row["start_time"]), []).append(row)
    ids, paths, captions = [], [], []
    for (youtube_id, start), group in clips.items():
        start_int = str(int(float(start))) if start.replace(".", "", 1).isdigit() else start
        stems = (f"{youtube_id}_{start_int}", f"{youtube_id}_{start}", f"Y{youtube_id}", youtube_id,
                 *(r["audiocap_id"] for r in group))
        found = find_existing(folder, stems, SUFFIXES)
        ids.append(f"{youtube_id}_{start_int}")
        paths.append(found or folder / f"{youtube_id}_{start_int}.wav")
        captions.append([r["caption"].strip() for r in group])
    kept, skipped = keep_available("audiocaps", ids, {"audio": paths}, str(folder))
    return EvalDataset(name="audiocaps", root=root, ids=[ids[i] for i in kept],
                       inputs={"audio": [paths[i] for i in kept]}, tasks=("text-retrieval",),
                       captions=[captions[i] for i in kept], skipped=skipped)
