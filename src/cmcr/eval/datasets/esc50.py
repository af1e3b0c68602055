"""ESC-50 (Piczak 2015): 2,000 five-second clips in 50 classes, for zero-shot audio classification.

Layout (the GitHub release karolpiczak/ESC-50, confirmed)::

    ROOT/
      audio/1-100032-A-0.wav ...          2,000 WAVs, 44.1 kHz mono, 5 s
      meta/esc50.csv                      filename,fold,target,category,esc10,src_file,take

Protocols: ``laion-clap`` (default) evaluates fold 1's 400 clips, as LAION-CLAP's ESC-50
zero-shot script does (its ``ESC50_1/test``); ``all-folds`` evaluates all 2,000. The class of
target ``k`` is the ``category`` of its rows, underscores read as spaces ("chirping_birds" ->
"chirping birds", as LAION-CLAP's ``ESC50_class_labels_indices_space.json``).
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, class_name, read_csv, require_dir

CSV_COLUMNS = ("filename", "fold", "target", "category")
TEST_FOLD = "1"  # LAION-CLAP's ESC-50 test split is fold 1


def read_esc50(root: Path, protocol: str = "laion-clap") -> EvalDataset:
    audio_dir = require_dir(root / "audio", "ESC-50's 2,000 WAV clips (audio/*.wav)")
    rows = read_csv(root / "meta" / "esc50.csv", CSV_COLUMNS,
                    "ESC-50's meta/esc50.csv with columns filename,fold,target,category,...")
    names = class_names(root, rows)
    if protocol == "laion-clap":
        rows = [row for row in rows if row["fold"].strip() == TEST_FOLD]
        if not rows:
            raise InputError(f"{root / 'meta' / 'esc50.csv'}: no clips in fold {TEST_FOLD}")
    paths = [audio_dir / row["filename"] for row in rows]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: file not found ({len(missing)} of {len(paths)} clips listed "
                         "in meta/esc50.csv are missing from audio/)")
    return EvalDataset(name="esc50", root=root, ids=[Path(r["filename"]).stem for r in rows],
                       inputs={"audio": paths}, protocol=protocol, tasks=("zero-shot",),
                       labels=[int(r["target"]) for r in rows], class_names=names)


def class_names(root: Path, rows: list[dict[str, str]]) -> list[str]:
    """Class names in target order, from every row (checked: targets 0..K-1)."""
    names: dict[int, str] = {}
    for row in rows:
        try:
            names[int(row["target"])] = class_name(row["category"])
        except ValueError:
            raise InputError(f"{root / 'meta' / 'esc50.csv'}: target '{row['target']}' of "
                             f"{row['filename']} is not an integer") from None
    if sorted(names) != list(range(len(names))):
        raise InputError(f"{root / 'meta' / 'esc50.csv'}: targets must be 0..{len(names) - 1}, "
                         f"got {sorted(names)[:5]}...")
    return [names[k] for k in range(len(names))]
