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
Nothing is downloaded, and only the base install is needed. Each variant runs ``--repeats``
times, interleaved (pipeline, naive, model only, pipeline, ...), so drift of a shared machine
touches all three alike; the table gives each one's median and spread (min-max), and the ratios
are of medians: naive/pipeline time (the speed-up) and model-only/pipeline time (how close to
model-bound: at most 1.0 by construction, since the pipeline runs the same model on the same
batches and does more; 1.0 means decoding is fully hidden). Threads are chosen as the ``cmcr``
command chooses them (cmcr.runtime.threads); the pipeline's decoding workers run one thread each.

    python bench/bench_embed.py                      # ~1-2 minutes on 2 CPU cores
    python bench/bench_embed.py --model tiny --images 96
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "assets"


def build_model(directory: Path, kind: str) -> Path:
    """A random-init CLIP checkpoint saved like a real one (cmcr.spaces.tiny: base install only)."""
    from cmcr.spaces.tiny import build_tiny_clip

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
    from cmcr.data.processing import load_image

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


def run_interleaved(space, paths: list[Path], root: Path, batch_size: int, workers: int,
                    repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant, ``repeats`` times, in interleaved order."""
    seconds: dict[str, list[float]] = {"pipeline": [], "naive": [], "model only": []}
    for repeat in range(repeats):
        seconds["pipeline"].append(time_pipeline(space, root / "images", root / f"store-{repeat}",
                                                 batch_size, workers))
        seconds["naive"].append(time_naive(space, paths))
        seconds["model only"].append(time_model_only(space, paths, batch_size))
    return seconds


def print_results(args: argparse.Namespace, space, workers: int, count: int,
                  seconds: dict[str, list[float]]) -> None:
    print(f"model: {args.model} CLIP image tower, random weights; {count} JPEGs "
          f"({'1920x1080 reference' if ASSETS.is_dir() else '1280x720 generated'}); "
          f"batch {args.batch_size}; {workers} workers; device {space.device}; "
          f"{torch.get_num_threads()} torch threads; {os.cpu_count()} CPUs; "
          f"{args.repeats} interleaved repeats")
    medians = {name: float(np.median(values)) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"  {name:<11} median {medians[name]:7.2f} s ({min(values):.2f}-{max(values):.2f})"
              f"  {count / medians[name]:8.1f} images/s")
    print(f"pipeline / naive speed-up:        {medians['naive'] / medians['pipeline']:5.2f}x")
    print(f"model-only / pipeline time:       {medians['model only'] / medians['pipeline']:5.2f} "
          "(at most 1.0; 1.0 = decoding fully hidden)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["vit-b32", "tiny"], default="vit-b32",
                        help="vision tower shape (default: vit-b32)")
    parser.add_argument("--images", type=int, default=64, help="JPEGs to embed (default: 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="images a batch (default: 16)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes for the pipeline (default: usable cores - 1, at least 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved runs of each variant (default: 3)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cmcr.spaces import load_space
    from cmcr.runtime.threads import configure_threads, usable_cores

    configure_threads()
    workers = args.workers if args.workers is not None else max(1, usable_cores() - 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model", args.model)
        paths = make_inputs(root / "images", args.images)
        space = load_space(f"clip:{model_dir}", device="auto")
        space.embed("image", paths[:2])  # load the tower, warm up
        seconds = run_interleaved(space, paths, root, args.batch_size, workers, args.repeats)
    print_results(args, space, workers, len(paths), seconds)


if __name__ == "__main__":
    main()
