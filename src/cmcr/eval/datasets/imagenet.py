"""ImageNet-1k (ILSVRC 2012) validation: 50,000 images in 1,000 classes, for zero-shot classification.

Layout: the Kaggle "ImageNet Object Localization Challenge" release (confirmed)::

    ROOT/
      LOC_synset_mapping.txt             1,000 lines "n01440764 tench, Tinca tinca" (class order)
      LOC_val_solution.csv               ImageId,PredictionString ("n01751748 x0 y0 x1 y1 ...")
      ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG

or, instead of the CSV, the class-folder form many scripts produce: ``ROOT/val/<wnid>/*.JPEG``.
The official devkit's meta.mat form is not read (it needs scipy); convert it to either form.

Class names are CLIP's curated names (openai/CLIP ``Prompt_Engineering_for_ImageNet.ipynb``,
shipped in ``cmcr/eval/data/imagenet_clip.json`` and looked up by synset id), unless
``ROOT/classnames.txt`` (one name a line, in the mapping's synset order) is present. The first
synonyms of ``LOC_synset_mapping.txt`` are never used: "crane" and "maillot" name two synsets
each. Names that read alike are refused (identical prototypes: those images could never be right).
"""

from __future__ import annotations

from pathlib import Path

from cmcr.errors import InputError
from cmcr.eval.datasets.base import (
    EvalDataset,
    check_unique_class_names,
    read_csv,
    read_text,
    require_dir,
    require_file,
)
from cmcr.eval.shipped import imagenet_class_names

SOLUTION = "LOC_val_solution.csv"
MAPPING = "LOC_synset_mapping.txt"


def read_synsets(root: Path) -> tuple[list[str], list[str]]:
    """(wnids, class names) in the mapping's order."""
    path = require_file(root / MAPPING, 'lines "<wnid> <name>, <synonym>, ..."')
    lines = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    wnids = [line.split(" ", 1)[0] for line in lines]
    custom = root / "classnames.txt"
    if custom.is_file():
        names = [line.strip() for line in read_text(custom).splitlines() if line.strip()]
        if len(names) != len(wnids):
            raise InputError(f"{custom}: {len(names)} names for {len(wnids)} synsets in {path}")
        check_unique_class_names(names, str(custom))
        return wnids, names
    curated = imagenet_class_names()
    unknown = [w for w in wnids if w not in curated]
    if unknown:
        raise InputError(f"{path}: synset(s) {unknown[:3]} are not ILSVRC-2012 classes; give "
                         f"ROOT/classnames.txt with one name per synset")
    return wnids, [curated[w] for w in wnids]


def solution_items(root: Path, index: dict[str, int]) -> tuple[list[str], list[Path], list[int]]:
    images = require_dir(root / "ILSVRC" / "Data" / "CLS-LOC" / "val", "the validation JPEGs")
    rows = read_csv(root / SOLUTION, ("ImageId", "PredictionString"), "ImageId,PredictionString")
    rows.sort(key=lambda row: row["ImageId"])
    labels = []
    for row in rows:
        wnid = row["PredictionString"].split(" ", 1)[0]
        if wnid not in index:
            raise InputError(f"{root / SOLUTION}: {row['ImageId']} has synset '{wnid}', not in {MAPPING}")
        labels.append(index[wnid])
    return [r["ImageId"] for r in rows], [images / f"{r['ImageId']}.JPEG" for r in rows], labels


def folder_items(root: Path, wnids: list[str]) -> tuple[list[str], list[Path], list[int]]:
    val = require_dir(root / "val", f"{SOLUTION} with ILSVRC/Data/CLS-LOC/val/, or val/<wnid>/*.JPEG")
    ids, paths, labels = [], [], []
    for label, wnid in enumerate(wnids):
        for path in sorted((val / wnid).glob("*.JPEG")):
            ids.append(path.stem)
            paths.append(path)
            labels.append(label)
    if not paths:
        raise InputError(f"{val}: no <wnid>/*.JPEG images (and no {root / SOLUTION})")
    return ids, paths, labels


def read_imagenet(root: Path, protocol: str = "clip-7") -> EvalDataset:
    wnids, names = read_synsets(root)
    if (root / SOLUTION).is_file():
        ids, paths, labels = solution_items(root, {w: i for i, w in enumerate(wnids)})
    else:
        ids, paths, labels = folder_items(root, wnids)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: file not found ({len(missing)} of {len(paths)} images missing)")
    return EvalDataset(name="imagenet", root=root, ids=ids, inputs={"image": paths},
                       protocol=protocol, tasks=("zero-shot",), labels=labels, class_names=names)
