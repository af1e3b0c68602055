"""Extended Flickr-SoundNet and VGG-SS (Mo & Morgado 2022, SLAVC), for counterfactual recognition.

The extended sets add *non-sounding* pairs (an image with a sound that does not come from it,
or silence) to the localisation test sets. Layout (SLAVC test code, confirmed for the CSV rule;
ACL-SSL keeps the added files in ``extend_frames/`` and ``extend_audio/``, also accepted)::

    ROOT/
      frames/<id>.jpg  audio/<id>.wav                 (extended files here or in extend_*/)
      extend_frames/<id>.jpg  extend_audio/<id>.wav   optional
      metadata/<set>_test.csv                         sounding test ids, first column
      metadata/<set>_test_plus_silent.csv             image_id,audio_id,label; rows labelled
                                                      'non-sounding' are the added pairs

with ``<set>`` ``flickr`` or ``vggss``. Sounding pairs (image and audio of the same id) are the
positives, non-sounding pairs the negatives; pairs whose files are absent are skipped.
"""

from __future__ import annotations

from pathlib import Path

from cmcr.eval.datasets.base import EvalDataset, keep_available, read_csv, require_dir

NON_SOUNDING = "non-sounding"


def locate(root: Path, kind: str, stem: str, suffix: str) -> Path:
    """``kind/<stem><suffix>``, else ``extend_<kind>/<stem><suffix>`` when only that exists."""
    main = root / kind / f"{stem}{suffix}"
    extended = root / f"extend_{kind}" / f"{stem}{suffix}"
    return extended if not main.is_file() and extended.is_file() else main


def read_extended(name: str, root: Path, prefix: str) -> EvalDataset:
    require_dir(root / "frames", "the test images, frames/<id>.jpg")
    require_dir(root / "audio", "the test sounds, audio/<id>.wav")
    sounding = read_csv(root / "metadata" / f"{prefix}_test.csv", ("id",),
                        "sounding test ids in the first column", header=False)
    extra = read_csv(root / "metadata" / f"{prefix}_test_plus_silent.csv",
                     ("image_id", "audio_id", "label"), "rows image_id,audio_id,label", header=False)
    pairs = [(row["id"].strip(), row["id"].strip(), True) for row in sounding]
    pairs += [(row["image_id"].strip(), row["audio_id"].strip(), False) for row in extra
              if row["label"].strip() == NON_SOUNDING]
    ids = [image if match else f"{image}+{audio}" for image, audio, match in pairs]
    paths = {"image": [locate(root, "frames", image, ".jpg") for image, _, _ in pairs],
             "audio": [locate(root, "audio", audio, ".wav") for _, audio, _ in pairs]}
    kept, skipped = keep_available(name, ids, paths, str(root))
    return EvalDataset(name=name, root=root, ids=[ids[i] for i in kept],
                       inputs={m: [p[i] for i in kept] for m, p in paths.items()},
                       tasks=("counterfactual",), matched=[pairs[i][2] for i in kept],
                       skipped=skipped)


def read_flickr_extended(root: Path) -> EvalDataset:
    return read_extended("flickr-soundnet-extended", root, "flickr")


def read_vggss_extended(root: Path) -> EvalDataset:
    return read_extended("vggss-extended", root, "vggss")
