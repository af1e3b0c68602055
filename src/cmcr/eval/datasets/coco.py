"""COCO captions, Karpathy test split: 5,000 val2014 images with (about) five captions each.

Layout (Karpathy's split file dataset_coco.json, as distributed with NeuralTalk / used by CLIP
and open_clip retrieval benchmarks, confirmed; images from COCO's val2014.zip)::

    ROOT/
      dataset_coco.json     {"images": [{"filepath": "val2014", "filename": "COCO_val2014_....jpg",
                                         "split": "test", "cocoid": 391895,
                                         "sentences": [{"raw": "A man ..."}, ...]}, ...]}
      val2014/*.jpg         (each image at ROOT/<filepath>/<filename>)

Used for text <-> image retrieval (several captions per image).
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import EvalDataset, read_json

SPLIT_FORMAT = 'Karpathy\'s {"images": [{"filepath", "filename", "split", "sentences": [{"raw"}]}]}'


def read_coco(root: Path, protocol: str = "standard", split: str = "test") -> EvalDataset:
    path = root / "dataset_coco.json"
    data = read_json(path, SPLIT_FORMAT)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: expected {SPLIT_FORMAT}")
    images = [entry for entry in data["images"] if entry.get("split") == split]
    if not images:
        raise InputError(f"{path}: no images with split '{split}'")
    paths, captions = [], []
    for entry in images:
        try:
            paths.append(root / entry.get("filepath", "") / entry["filename"])
            captions.append([s["raw"].strip() for s in entry["sentences"]])
        except (KeyError, TypeError, AttributeError):
            raise InputError(f"{path}: image entry {entry.get('cocoid', '?')} lacks filename or "
                             "sentences[].raw") from None
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: file not found ({len(missing)} of {len(paths)} "
                         f"{split} images missing; unzip val2014.zip into {root})")
    ids = [str(entry.get("cocoid", Path(entry["filename"]).stem)) for entry in images]
    return EvalDataset(name="coco", root=root, ids=ids, inputs={"image": paths},
                       protocol=protocol, tasks=("text-retrieval",), captions=captions)
