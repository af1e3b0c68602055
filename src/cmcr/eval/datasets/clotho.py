"""Clotho v2 (Drossos et al. 2020) evaluation split: 1,045 clips with five captions each.

Layout (Zenodo release, confirmed: clotho_audio_evaluation.7z unpacks to ``evaluation/``)::

    ROOT/
      evaluation/*.wav                          the clips (15-30 s, 44.1 kHz)
      clotho_captions_evaluation.csv            file_name,caption_1,...,caption_5

Used for text <-> audio retrieval (several captions per clip).
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, read_csv, require_dir

CAPTION_COLUMNS = tuple(f"caption_{k}" for k in range(1, 6))


def read_clotho(root: Path, protocol: str = "standard") -> EvalDataset:
    audio_dir = require_dir(root / "evaluation", "Clotho's evaluation clips (evaluation/*.wav, "
                            "from clotho_audio_evaluation.7z)")
    rows = read_csv(root / "clotho_captions_evaluation.csv", ("file_name", *CAPTION_COLUMNS),
                    "Clotho's captions: file_name,caption_1,...,caption_5")
    paths = [audio_dir / row["file_name"] for row in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: file not found ({len(missing)} of {len(paths)} clips listed "
                         "in clotho_captions_evaluation.csv are missing)")
    captions = [[row[c].strip() for c in CAPTION_COLUMNS if row[c].strip()] for row in rows]
    return EvalDataset(name="clotho", root=root, ids=[Path(r["file_name"]).stem for r in rows],
                       inputs={"audio": paths}, protocol=protocol, tasks=("text-retrieval",),
                       captions=captions)
