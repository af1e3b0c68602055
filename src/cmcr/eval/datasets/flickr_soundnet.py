"""Flickr-SoundNet localisation test set (Senocak et al. 2018): 250 image-sound pairs with boxes.

Layout (LVS / EZ-VSL test code, confirmed for folders and the box rule; the XML tag names are
not published, so boxes are read positionally as EZ-VSL does)::

    ROOT/
      frames/<id>.jpg              the image
      audio/<id>.wav               its sound
      Annotations/<id>.xml         boxes of up to 3 annotators; every <bbox> element under a child
                                   of the root holds one field (skipped) then xmin, ymin, xmax, ymax
                                   in pixels of the 256 x 256 resized image
      metadata/flickr_test.csv     optional: the test ids, first column (LVS metadata); without it,
                                   every Annotations/*.xml is a test item

The ground truth is the annotators' consensus map (sum of boxes / 2, capped at 1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, keep_available, read_csv, require_dir

BOX_FRAME = 256.0  # annotation pixels are on the 256 x 256 image (EZ-VSL: 224 * v / 256)
NAMED = ("xmin", "ymin", "xmax", "ymax")


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
            try:
                boxes.append(tuple(float(v) / BOX_FRAME for v in values))
            except (TypeError, ValueError):
                raise InputError(f"{path}: a <bbox> needs four numbers after its first field, "
                                 f"got {values}") from None
            if len(boxes[-1]) != 4:
                raise InputError(f"{path}: a <bbox> needs xmin, ymin, xmax, ymax, got {values}")
    if not boxes:
        raise InputError(f"{path}: no <bbox> elements")
    return boxes


def listed_ids(root: Path, annotations: Path) -> list[str]:
    listing = root / "metadata" / "flickr_test.csv"
    if listing.is_file():
        rows = read_csv(listing, ("id",), "test ids in the first column", header=False)
        return [row["id"].strip() for row in rows]
    return sorted(p.stem for p in annotations.glob("*.xml"))


def read_flickr_soundnet(root: Path) -> EvalDataset:
    annotations = require_dir(root / "Annotations", "the test boxes, Annotations/<id>.xml")
    frames = require_dir(root / "frames", "the test images, frames/<id>.jpg")
    audio = require_dir(root / "audio", "the test sounds, audio/<id>.wav")
    ids = listed_ids(root, annotations)
    paths = {"image": [frames / f"{i}.jpg" for i in ids], "audio": [audio / f"{i}.wav" for i in ids],
             "boxes": [annotations / f"{i}.xml" for i in ids]}
    kept, skipped = keep_available("flickr-soundnet", ids, paths, str(root))
    return EvalDataset(name="flickr-soundnet", root=root, ids=[ids[i] for i in kept],
                       inputs={m: [paths[m][i] for i in kept] for m in ("image", "audio")},
                       tasks=("retrieval", "localization"),
                       boxes=[read_boxes(paths["boxes"][i]) for i in kept], box_consensus=2,
                       skipped=skipped)
