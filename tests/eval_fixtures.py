"""Tiny benchmark folders in each dataset's published layout, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_wav(path: Path, seed: int = 0, seconds: float = 0.5, rate: int = 16000) -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).uniform(-0.3, 0.3, int(seconds * rate)).astype(np.float32)
    soundfile.write(str(path), samples, rate)
    return path


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (40, 32)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_esc50(root: Path) -> Path:
    header = "filename,fold,target,category,esc10,src_file,take\n"
    rows = ["1-100032-A-0.wav,1,0,dog,True,100032,A", "1-100038-A-14.wav,1,1,chirping_birds,False,100038,A",
            "2-100648-A-0.wav,2,0,dog,True,100648,A"]
    write(root / "meta" / "esc50.csv", header + "\n".join(rows) + "\n")
    for seed, row in enumerate(rows):
        write_wav(root / "audio" / row.split(",")[0], seed)
    return root


def make_clotho(root: Path) -> Path:
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    rows = [f"clip {k}.wav," + ",".join(f"sound {k} caption {c}" for c in range(1, 6)) for k in range(3)]
    write(root / "clotho_captions_evaluation.csv", header + "\n".join(rows) + "\n")
    for k in range(3):
        write_wav(root / "evaluation" / f"clip {k}.wav", k)
    return root


def make_audiocaps(root: Path) -> Path:
    rows = ["audiocap_id,youtube_id,start_time,caption"]
    for clip, youtube_id in enumerate(["abcdefghijk", "lmnopqrstuv", "wxyz0123456"]):
        for caption in range(2):
            rows.append(f"{100 + clip * 10 + caption},{youtube_id},{30 * clip},clip {clip} caption {caption}")
    write(root / "test.csv", "\n".join(rows) + "\n")
    write_wav(root / "audio" / "test" / "abcdefghijk_0.wav", 0)
    write_wav(root / "audio" / "test" / "Ylmnopqrstuv.wav", 1)  # the AudioSet naming
    return root  # the third clip's audio is absent: skipped and reported


def make_boxed_pairs(root: Path, ids: list[str], box_file: Path) -> Path:
    entries = []
    for seed, item in enumerate(ids):
        write_image(root / "frames" / f"{item}.jpg", seed)
        write_wav(root / "audio" / f"{item}.wav", seed)
        entries.append({"file": item, "class": "dog", "bbox": [[0.1, 0.2, 0.6, 0.9]]})
    write(box_file, json.dumps(entries))
    return root


def make_vggss(root: Path, count: int = 4) -> Path:
    ids = [f"{chr(97 + k) * 11}_{k:06d}" for k in range(count)]
    return make_boxed_pairs(root, ids, root / "metadata" / "vggss.json")


def make_music_solo(root: Path) -> Path:
    return make_boxed_pairs(root, ["accordion_0001", "violin_0002"], root / "music_solo_test.json")


FLICKR_XML = """<?xml version="1.0"?>
<annotation>
  <file>{id}.jpg</file>
  <size><width>256</width><height>256</height></size>
  <object><bbox><annotator>1</annotator><xmin>32</xmin><ymin>64</ymin><xmax>128</xmax><ymax>192</ymax></bbox></object>
  <object><bbox><annotator>2</annotator><xmin>0</xmin><ymin>0</ymin><xmax>256</xmax><ymax>128</ymax></bbox></object>
</annotation>
"""


def make_flickr(root: Path, count: int = 4, listed: bool = True) -> Path:
    ids = [f"{1000 + k}" for k in range(count)]
    for seed, item in enumerate(ids):
        write_image(root / "frames" / f"{item}.jpg", seed)
        write_wav(root / "audio" / f"{item}.wav", seed)
        write(root / "Annotations" / f"{item}.xml", FLICKR_XML.format(id=item))
    if listed:
        write(root / "metadata" / "flickr_test.csv", "\n".join(ids) + "\n")
    return root


def make_extended(root: Path, prefix: str = "flickr") -> Path:
    ids = ["1000", "1001", "1002", "1003"]
    for seed, item in enumerate(ids):
        write_image(root / "frames" / f"{item}.jpg", seed)
        write_wav(root / "audio" / f"{item}.wav", seed)
    write_wav(root / "extend_audio" / "silent_1.wav", 9)
    write(root / "metadata" / f"{prefix}_test.csv", "\n".join(ids) + "\n")
    write(root / "metadata" / f"{prefix}_test_plus_silent.csv",
          "1000,1002,non-sounding\n1001,silent_1,non-sounding\n1003,1003,sounding\n")
    return root


def make_ave(root: Path) -> Path:
    header = "Category&VideoID&Quality&StartTime&EndTime\n"
    lines = ["Church bell&RUhOCu3LNXM&good&0&10", "Dog&abcdefghijk&good&2&7", "Dog&lmnopqrstuv&good&0&10"]
    write(root / "Annotations.txt", header + "\n".join(lines) + "\n")
    write(root / "testSet.txt", header + "\n".join(lines[1:]) + "\n")
    for line in lines:
        write(root / "AVE" / f"{line.split('&')[1]}.mp4", "not decoded by the reader")
    return root


def make_coco(root: Path) -> Path:
    images = []
    for k, split in enumerate(["test", "test", "train", "test"]):
        name = f"COCO_val2014_{k:012d}.jpg"
        write_image(root / "val2014" / name, k)
        images.append({"filepath": "val2014", "filename": name, "split": split, "cocoid": k,
                       "sentences": [{"raw": f"image {k} caption {c}", "tokens": []} for c in range(2)]})
    write(root / "dataset_coco.json", json.dumps({"images": images, "dataset": "coco"}))
    return root


SYNSETS = "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn01484850 great white shark\n"


def make_imagenet(root: Path) -> Path:
    write(root / "LOC_synset_mapping.txt", SYNSETS)
    rows = ["ImageId,PredictionString", "ILSVRC2012_val_00000002,n01443537 1 2 30 40 n01443537 3 4 20 20",
            "ILSVRC2012_val_00000001,n01484850 5 5 10 10"]
    write(root / "LOC_val_solution.csv", "\n".join(rows) + "\n")
    for k in (1, 2):
        write_image(root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"ILSVRC2012_val_{k:08d}.JPEG", k)
    return root


def make_modelnet40(root: Path) -> Path:
    write(root / "modelnet40_shape_names.txt", "airplane\nbathtub\nflower_pot\n")
    write(root / "modelnet40_test.txt", "airplane_0627\nflower_pot_0150\nbathtub_0107\n")
    return root
