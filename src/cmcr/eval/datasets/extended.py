"""Extended Flickr-SoundNet and VGG-SS (Mo & Morgado 2022, SLAVC), for counterfactual recognition.

The extended sets add *non-sounding* pairs (an image with a sound that does not come from it, or
silence) to the localisation test sets. Layout (stoneMo/SLAVC ``datasets.py get_test_dataset``;
ACL-SSL keeps the added files in ``extend_frames/`` and ``extend_audio/``, also read)::

    ROOT/
      frames/<id>.jpg  audio/<id>.wav                 the test pairs
      extend_frames/<id>.jpg  extend_audio/<id>.wav   optional: the added files
      metadata/<set>_test.csv                         sounding test ids, first column, no header
                                                      (SLAVC's flickr_test.csv: 250 rows "id,N")
      metadata/<set>_test_plus_silent.csv             header video,audio,label; rows labelled
                                                      'non-sounding' are the added pairs
      Annotations/<id>.xml                            flickr: the boxes (SLAVC --test_gt_path)
      metadata/vggss.json                             vggss: the boxes

with ``<set>`` ``flickr`` or ``vggss``. Sounding pairs (image and audio of one id) are the
positives, non-sounding pairs the negatives; pairs whose files are absent are skipped. A
non-sounding pair's files are looked up in ``extend_*/`` first. The boxes of the sounding pairs
are needed by the ``slavc`` protocol (a pair counts as found only where it is localised) and
unused by ``global``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cmcr.errors import InputError
from cmcr.eval.datasets.base import (
    EvalDataset,
    keep_available,
    read_csv,
    require_dir,
    require_file,
)
from cmcr.eval.datasets.flickr_soundnet import read_boxes
from cmcr.eval.datasets.vggss import vggss_boxes

NON_SOUNDING = "non-sounding"
HEADER = ("video", "audio", "label")
Pair = tuple[str, str, bool]  # image id, audio id, sounding


def locate(root: Path, kind: str, stem: str, suffix: str, added: bool) -> Path:
    """``kind/<stem><suffix>`` or ``extend_<kind>/<stem><suffix>``: an added (non-sounding)
    pair's file is looked for in ``extend_<kind>/`` first, a test pair's in ``kind/``."""
    main = root / kind / f"{stem}{suffix}"
    extended = root / f"extend_{kind}" / f"{stem}{suffix}"
    first, second = (extended, main) if added else (main, extended)
    return second if not first.is_file() and second.is_file() else first


def listed_pairs(root: Path, prefix: str) -> list[Pair]:
    """Sounding pairs from ``<set>_test.csv``, then the non-sounding rows of the plus-silent CSV."""
    sounding = read_csv(root / "metadata" / f"{prefix}_test.csv", ("id",),
                        "sounding test ids in the first column", header=False)
    extra = read_csv(root / "metadata" / f"{prefix}_test_plus_silent.csv", HEADER,
                     "rows video,audio,label (SLAVC's header 'video,audio,label')", header=False)
    pairs = [(row["id"].strip(), row["id"].strip(), True) for row in sounding]
    pairs += [(row["video"].strip(), row["audio"].strip(), False) for row in extra
              if row["label"].strip() == NON_SOUNDING]
    return pairs


def box_reader(root: Path, prefix: str, protocol: str) -> Callable[[str], list] | None:
    """A function id -> boxes for the sounding pairs, or None when the set's boxes are absent
    (an error under the ``slavc`` protocol, which needs them)."""
    if prefix == "flickr":
        folder = root / "Annotations"
        if folder.is_dir():
            return lambda item: read_boxes(require_file(folder / f"{item}.xml", "its boxes"))
        expected = f"{folder}: folder not found; expected the boxes, Annotations/<id>.xml"
    else:
        path = root / "metadata" / "vggss.json"
        if path.is_file():
            boxes = vggss_boxes(path)
            return lambda item: boxes.get(item) or missing_boxes(path, item)
        expected = f"{path}: file not found; expected VGG-SS's boxes (LVS metadata/vggss.json)"
    if protocol == "slavc":
        raise InputError(f"{expected} (the slavc protocol scores localisation; --protocol "
                         "global needs no boxes)")
    return None


def missing_boxes(path: Path, item: str) -> list:
    raise InputError(f"{path}: no boxes for sounding test item '{item}'")


def read_extended(name: str, root: Path, prefix: str, protocol: str) -> EvalDataset:
    require_dir(root / "frames", "the test images, frames/<id>.jpg")
    require_dir(root / "audio", "the test sounds, audio/<id>.wav")
    pairs = listed_pairs(root, prefix)
    boxes_of = box_reader(root, prefix, protocol)
    ids = [image if sounding else f"{image}+{audio}" for image, audio, sounding in pairs]
    paths = {"image": [locate(root, "frames", image, ".jpg", not s) for image, _, s in pairs],
             "audio": [locate(root, "audio", audio, ".wav", not s) for _, audio, s in pairs]}
    kept, skipped = keep_available(name, ids, paths, str(root))
    boxes = None if boxes_of is None else \
        [boxes_of(pairs[i][0]) if pairs[i][2] else [] for i in kept]
    return EvalDataset(name=name, root=root, ids=[ids[i] for i in kept],
                       inputs={m: [p[i] for i in kept] for m, p in paths.items()},
                       protocol=protocol, tasks=("counterfactual",), matched=[pairs[i][2] for i in kept],
                       boxes=boxes, box_consensus=2 if prefix == "flickr" else 1, skipped=skipped,
                       notes=same_file_notes(paths, pairs, kept))


def same_file_notes(paths: dict[str, list[Path]], pairs: list[Pair], kept: list[int]) -> list[str]:
    """Say when non-sounding pairs read the very files of a sounding pair (a layout mistake: the
    two would then differ only in their label)."""
    sounding = {(paths["image"][i], paths["audio"][i]) for i in kept if pairs[i][2]}
    same = sum(1 for i in kept if not pairs[i][2]
               and (paths["image"][i], paths["audio"][i]) in sounding)
    return [f"{same} non-sounding pair(s) read the same files as a sounding pair; put the added "
            "files in extend_frames/ and extend_audio/"] if same else []


def read_flickr_extended(root: Path, protocol: str = "slavc") -> EvalDataset:
    return read_extended("flickr-soundnet-extended", root, "flickr", protocol)


def read_vggss_extended(root: Path, protocol: str = "slavc") -> EvalDataset:
    return read_extended("vggss-extended", root, "vggss", protocol)
