"""Benchmark: ``cmcr embed``'s pipeline against a naive per-file loop and against the model alone.

All three run in one process on the same inputs (copies of the 1920x1080 reference JPEGs, or
generated 1280x720 JPEGs when shared/ is absent), with the same random-init CLIP image tower:

* ``pipeline``   -- ``cmcr.embed.embed_items``: files decoded and preprocessed in ``--workers``
  data-loader processes, batches of ``--batch-size`` through the model, rows written to a store.
* ``naive``      -- what the official code does: open one file, preprocess it, encode it alone.
* ``model only`` -- the tower on pre-decoded, pre-processed ``pixel_values`` in the same batches:
  the ceiling the pipeline can reach when decoding is fully hidden behind the model.

Model: ``--model vit-b32`` (default) is a ViT-B/32-shaped vision tower (224 px, 12 layers, width
768, 512-d projection: the shape of openai/clip-vit-base-patch32) with random weights and a tiny
text tower (unused here); ``--model tiny`` is a 2-layer, 32-px toy that makes decoding dominate.
Nothing is downloaded. Ratios printed: pipeline/naive (speed-up) and pipeline/model-only
(how close to model-bound; 1.0 means decoding is free).

    python bench/bench_embed.py                      # ~1-2 minutes on 2 CPU cores
    python bench/bench_embed.py --model tiny --images 96
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "assets"


def build_model(directory: Path, kind: str) -> Path:
    """A random-init CLIP checkpoint saved like a real one (tokenizer from tests/tiny_models.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import build_tiny_clip

    if kind == "tiny":
        return build_tiny_clip(directory)
    from transformers import CLIPConfig, CLIPModel

    build_tiny_clip(directory, image_size=224, patch_size=32)  # tokenizer + 224 px processor
    config = CLIPConfig.from_pretrained(directory)
    config.vision_config.update(dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, image_size=224, patch_size=32,
                                     projection_dim=512))
    config.projection_dim = 512
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    return directory


def make_inputs(directory: Path, count: int) -> list[Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    sources = sorted(ASSETS.glob("*.jpeg")) if ASSETS.is_dir() else []
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = directory / f"img{index:04d}.jpg"
        if sources:
            shutil.copyfile(sources[index % len(sources)], path)
        else:
            Image.fromarray(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def time_pipeline(space, root: Path, out: Path, batch_size: int, workers: int) -> float:
    from cmcr.embed import collect_inputs, embed_items

    items = collect_inputs(root, "image")
    began = time.perf_counter()
    embed_items(space, "image", items, out, batch_size=batch_size, workers=workers, progress=False)
    return time.perf_counter() - began


def time_naive(space, paths: list[Path]) -> float:
    from cmcr.processing import load_image

    preprocessor = space.preprocessor("image")
    began = time.perf_counter()
    for path in paths:
        space.encode("image", preprocessor.collate([load_image(path)]))
    return time.perf_counter() - began


def time_model_only(space, paths: list[Path], batch_size: int) -> float:
    preprocessor = space.preprocessor("image")
    batches = [preprocessor.collate([preprocessor.prepare(p) for p in paths[i:i + batch_size]])
               for i in range(0, len(paths), batch_size)]
    began = time.perf_counter()
    for batch in batches:
        space.encode("image", batch)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["vit-b32", "tiny"], default="vit-b32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None, help="default: CPU cores - 1 (min 1)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cmcr.spaces import load_space

    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model_dir = build_model(tmp_path / "model", args.model)
        paths = make_inputs(tmp_path / "images", args.images)
        space = load_space(f"clip:{model_dir}", device="auto")
        space.embed("image", paths[:2])  # load the tower, warm up
        pipeline = time_pipeline(space, tmp_path / "images", tmp_path / "store", args.batch_size, workers)
        naive = time_naive(space, paths)
        model_only = time_model_only(space, paths, args.batch_size)
    n = len(paths)
    print(f"model: {args.model} CLIP image tower, random weights; {n} JPEGs "
          f"({'1920x1080 reference' if ASSETS.is_dir() else '1280x720 generated'}); "
          f"batch {args.batch_size}; {workers} workers; device {space.device}; "
          f"{torch.get_num_threads()} torch threads; {os.cpu_count()} CPUs")
    for name, seconds in (("pipeline", pipeline), ("naive", naive), ("model only", model_only)):
        print(f"  {name:<11} {seconds:7.2f} s  {n / seconds:8.1f} images/s")
    print(f"pipeline / naive speed-up:        {naive / pipeline:5.2f}x")
    print(f"pipeline / model-only throughput: {model_only / pipeline:5.2f} (1.0 = decoding fully hidden)")


if __name__ == "__main__":
    main()
