"""Flickr-SoundNet localisation test set (Senocak et al. 2018): image-sound pairs with boxes.

The test ids ship with cmcr (``cmcr/eval/data/flickr_soundnet_test.json``), chosen by protocol:
``lvs`` (default) the 249 of LVS and EZ-VSL ``metadata/flickr_test.csv``; ``slavc`` the 250 of
SLAVC's (LVS's plus 3908875350). Only those are evaluated, whatever else the folder holds (the
labelled download has 5,000 annotated pairs).

Three layouts are read (the boxes the same in each)::

    ROOT/Annotations/<id>.xml + frames/<id>.jpg + audio/<id>.wav         (LVS / EZ-VSL / SLAVC)
    ROOT/[5k_labeled/]Annotations/<id>.xml + Data/frames/<id>.jpg + Data/audio/<id>.wav
                                                                          (the labelled download
                                                                          as SSPL lays it out)
    ROOT/Annotations/<id>.xml + Data/<k>/<id>.jpg + Data/<k>/<id>.wav    (the download as
                                                                          distributed, read as
                                                                          hohsiangwu/rethinking-
                                                                          visual-sound-localization)

Each XML holds the boxes of up to 3 annotators; the tag names are not published, so, as EZ-VSL
does, every ``<bbox>`` element under a child of the root is read positionally: one field
(skipped), then xmin, ymin, xmax, ymax in pixels of the 256 x 256 resized image. The ground
truth is the annotators' consensus map (sum of boxes / 2, capped at 1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, keep_available, require_dir, xyxy_box
from cmcr.eval.shipped import flickr_test_ids

BOX_FRAME = 256.0  # annotation pixels are on the 256 x 256 image (EZ-VSL: 224 * v / 256)
NAMED = ("xmin", "ymin", "xmax", "ymax")
LAYOUTS = ("ROOT/{Annotations,frames,audio}/, ROOT/[5k_labeled/]{Annotations,Data/frames,Data/audio}/ "
           "or ROOT/{Annotations,Data/<k>}/ (the labelled download)")


def read_boxes(path: Path) -> list[tuple[float, float, float, float]]:
    """All boxes of one annotation file as fractions (x0, y0, x1, y1)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise InputError(f"{path}: not readable XML ({err})") from None
    boxes = []
    for child in root:
        for element in child:
            if element.tag != "bbox":
                continue
            fields = {sub.tag: sub.text for sub in element}
            values = [fields[k] for k in NAMED] if all(k in fields for k in NAMED) \
                else [sub.text for sub in list(element)[1:5]]
            if len(values) != 4:
                raise InputError(f"{path}: a <bbox> needs xmin, ymin, xmax, ymax after its first "
                                 f"field, got {values}")
            try:
                pixels = [float(v) / BOX_FRAME for v in values]
            except (TypeError, ValueError):
                raise InputError(f"{path}: a <bbox> needs four numbers after its first field, "
                                 f"got {values}") from None
            boxes.append(xyxy_box(pixels, str(path)))
    if not boxes:
        raise InputError(f"{path}: no <bbox> elements")
    return boxes


def media_index(data: Path) -> dict[str, Path]:
    """``Data/<k>/<id>.jpg|wav`` of the distributed download, by file name."""
    return {path.name: path for path in data.glob("*/*") if path.suffix in (".jpg", ".wav")}


def media_paths(base: Path, ids: list[str]) -> dict[str, list[Path]]:
    """Where each id's image and sound are, in whichever layout ``base`` has."""
    if (base / "frames").is_dir() or (base / "audio").is_dir():
        frames = require_dir(base / "frames", "the test images, frames/<id>.jpg")
        audio = require_dir(base / "audio", "the test sounds, audio/<id>.wav")
    elif (base / "Data" / "frames").is_dir() or (base / "Data" / "audio").is_dir():
        frames = require_dir(base / "Data" / "frames", "the test images, Data/frames/<id>.jpg")
        audio = require_dir(base / "Data" / "audio", "the test sounds, Data/audio/<id>.wav")
    else:
        found = media_index(require_dir(base / "Data", f"the test images and sounds ({LAYOUTS})"))
        missing = base / "Data" / "<k>"
        return {"image": [found.get(f"{i}.jpg", missing / f"{i}.jpg") for i in ids],
                "audio": [found.get(f"{i}.wav", missing / f"{i}.wav") for i in ids]}
    return {"image": [frames / f"{i}.jpg" for i in ids], "audio": [audio / f"{i}.wav" for i in ids]}


def read_flickr_soundnet(root: Path, protocol: str = "lvs") -> EvalDataset:
    base = root / "5k_labeled" if (root / "5k_labeled").is_dir() else root
    annotations = require_dir(base / "Annotations", f"the test boxes, Annotations/<id>.xml ({LAYOUTS})")
    ids = flickr_test_ids(protocol)
    paths = {**media_paths(base, ids), "boxes": [annotations / f"{i}.xml" for i in ids]}
    kept, skipped = keep_available("flickr-soundnet", ids, paths, str(base))
    return EvalDataset(name="flickr-soundnet", root=root, ids=[ids[i] for i in kept],
                       inputs={m: [paths[m][i] for i in kept] for m in ("image", "audio")},
                       protocol=protocol, tasks=("retrieval", "localization"),
                       boxes=[read_boxes(paths["boxes"][i]) for i in kept], box_consensus=2,
                       skipped=skipped)
