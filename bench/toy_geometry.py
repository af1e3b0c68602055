"""Exploration: which world and training give the toy CLIP real CLIP's geometry?

Trains the toy CLIP's architecture (``cmcr.world.toy_spaces.build_toy_clip``) on ``--train``
(image, look caption) pairs drawn like the world's CLIP split, optionally with three extra
independent, captioned factors of variation (``--factors frame,bg,badge``: a coloured frame or
none, dark/grey/light background, a white glyph in one of four corners), then prints the
geometry (``cmcr.spaces.geometry``) of 1,000 held-out pairs: participation ratio of image and
text rows, modality gap and its stability, matched and within-modality cosine, and image ->
text R@1 as a sanity check of what was learned. docs/regimes.md holds the table it produced.

    python bench/toy_geometry.py --epochs 10                     # ~1 minute on 2 cores
    python bench/toy_geometry.py --factors frame,bg,badge --epochs 30 --scale 100
    python bench/toy_geometry.py --width 256 --epochs 30         # 4x wider towers (~10 min)
    python bench/toy_geometry.py --palette 48 --epochs 30        # concepts in 48 colours, not 11
    python bench/toy_geometry.py --factors frame,bg,badge --hard-batches   # same-concept batches
    python bench/toy_geometry.py --world grid --grid 4 --values 11   # 16 captioned cell colours
    python bench/toy_geometry.py --world grid --glyphs --values 5    # 9 cells of 5 glyphs

``--world grid`` replaces the world's pictures by the easiest many-factor data we could think
of: a G x G grid of cells, each in one of V colours drawn independently, and a caption naming
every cell ("alpha red beta blue ..."), so G*G independent factors, all captioned, all cheap to
see. It asks whether more captioned factors give more directions when the towers do learn them.
Each run also prints the top eigenvalues of the held-out rows (share of variance, %).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw

from cmcr.spaces import load_space
from cmcr.spaces.base import quiet_transformers, require_transformers
from cmcr.spaces.geometry import effective_dim, space_geometry
from cmcr.world.captions import look_caption
from cmcr.world.concepts import COLOURS, CONCEPTS
from cmcr.world.render import render_image
from cmcr.world.toy_spaces import (ToyTraining, build_toy_clip, collate_all, contrastive_training,
                                   world_words)

FRAMES = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225),
          "yellow": (240, 225, 40), "purple": (140, 50, 190), "orange": (250, 140, 20),
          "cyan": (40, 205, 215), "pink": (250, 125, 200)}
CORNERS = {"top left": (2, 2), "top right": (52, 2), "bottom left": (2, 52),
           "bottom right": (52, 52)}
GLYPHS = ("dot", "plus", "bar", "box", "wedge")


def draw_glyph(draw: ImageDraw.ImageDraw, kind: str, x: int, y: int, side: int = 9) -> None:
    """A small white glyph with its top-left corner at (x, y)."""
    white, mid = (255, 255, 255), side // 2
    if kind == "dot":
        draw.ellipse((x, y, x + side, y + side), fill=white)
    elif kind == "plus":
        draw.rectangle((x + mid - 1, y, x + mid + 1, y + side), fill=white)
        draw.rectangle((x, y + mid - 1, x + side, y + mid + 1), fill=white)
    elif kind == "bar":
        draw.rectangle((x, y + mid - 1, x + side, y + mid + 2), fill=white)
    elif kind == "box":
        draw.rectangle((x, y, x + side, y + side), outline=white, width=2)
    else:
        draw.polygon([(x, y + side), (x + side, y + side), (x + mid, y)], fill=white)


def extra_factors(image: Image.Image, factors: set[str], rng: np.random.Generator
                  ) -> tuple[Image.Image, list[str]]:
    """Apply the chosen extra factors to ``image``; each is captioned 70 % of the time."""
    phrases = []
    if "bg" in factors:
        level = int(rng.integers(3))
        pixels = np.asarray(image, np.float32) * (0.45, 1.0, 1.5)[level]
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        phrases.append(f"on a {('dark', 'grey', 'light')[level]} background")
    draw = ImageDraw.Draw(image)
    if "frame" in factors:
        choice = int(rng.integers(len(FRAMES) + 1))  # the last choice: no frame
        if choice < len(FRAMES):
            name = list(FRAMES)[choice]
            draw.rectangle((0, 0, 63, 63), outline=FRAMES[name], width=3)
            phrases.append(f"in a {name} frame")
    if "badge" in factors:
        corner, glyph = list(CORNERS)[int(rng.integers(4))], GLYPHS[int(rng.integers(5))]
        draw_glyph(draw, glyph, *CORNERS[corner])
        phrases.append(f"with a {glyph} in the {corner} corner")
    return image, [p for p in phrases if rng.uniform() < 0.7]


def palette(count: int) -> list[tuple[int, int, int]]:
    """``count`` saturated colours from a 5-level RGB grid, farthest-first from each other."""
    levels = (20, 75, 130, 185, 240)
    grid = np.array([(r, g, b) for r in levels for g in levels for b in levels], np.float32)
    grid = grid[grid.max(1) - grid.min(1) >= 100]  # saturated: never the grey background
    chosen = [0]
    distance = np.linalg.norm(grid - grid[0], axis=1)
    while len(chosen) < min(count, len(grid)):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(grid - grid[chosen[-1]], axis=1))
    return [tuple(int(v) for v in grid[i]) for i in chosen]


def recoloured_concepts(count: int) -> list:
    """The world's concepts with concept i in colour i mod ``count`` of :func:`palette`, each
    colour named by a made-up word ("hueab"), so captions name it."""
    import dataclasses
    import itertools

    from cmcr.world import concepts as world_concepts

    names = ["hue" + "".join(letters) for letters in itertools.product("abcdefgh", repeat=3)]
    for name, rgb in zip(names, palette(count)):
        world_concepts.COLOURS[name] = rgb
    used = min(count, len(palette(count)))
    return [dataclasses.replace(concept, colour_name=names[i % used])
            for i, concept in enumerate(CONCEPTS)]


def make_pairs(seed: int, count: int, factors: set[str], out: Path, concepts: list
               ) -> tuple[list[str], list[str], list[str]]:
    """``count`` (image path, caption) pairs drawn like the world's CLIP split, and each pair's
    first concept (for --hard-batches)."""
    out.mkdir(parents=True, exist_ok=True)
    paths, captions, first_concepts = [], [], []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        objects = [concepts[i] for i in rng.permutation(len(concepts))[:int(rng.integers(1, 4))]]
        image, boxes = render_image(objects, rng, 64)
        caption = look_caption(objects, rng, [tuple(b) for b in boxes])
        image, phrases = extra_factors(image, factors, rng)
        path = out / f"{index:05d}.png"
        image.save(path, compress_level=1)
        paths.append(str(path))
        captions.append(" ".join([caption, *phrases]))
        first_concepts.append(objects[0].name)
    return paths, captions, first_concepts


def grouped_order(first_concepts: list[str], batch_size: int):
    """An epoch order whose batches hold pairs of few first concepts (hard negatives): pairs
    sorted by their first concept (ties shuffled), cut into batches, the batches shuffled."""
    names = sorted(set(first_concepts))
    key = torch.tensor([names.index(name) for name in first_concepts], dtype=torch.float64)

    def order(count: int, generator: torch.Generator) -> torch.Tensor:
        jitter = torch.rand(count, generator=generator, dtype=torch.float64)
        ranked = torch.argsort(key + 0.5 * jitter)
        batches = list(ranked[:count - count % batch_size].split(batch_size))
        shuffled = torch.randperm(len(batches), generator=generator)
        return torch.cat([batches[i] for i in shuffled] + [ranked[count - count % batch_size:]])

    return order


CELL_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
              "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau",
              "upsilon", "phi", "chi", "psi", "omega", "aleph")


def grid_board(cells: np.ndarray, grid: int, glyphs: bool) -> np.ndarray:
    """A 64 x 64 board: cell i filled with world colour ``cells[i]``, or (``glyphs``) a white
    glyph ``GLYPHS[cells[i]]`` drawn on black."""
    side = 64 // grid
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    for cell, value in enumerate(cells):
        row, column = divmod(cell, grid)
        if glyphs:
            draw_glyph(draw, GLYPHS[value], column * side + 2, row * side + 2, side - 5)
        else:
            draw.rectangle((column * side, row * side, (column + 1) * side - 1,
                            (row + 1) * side - 1), fill=list(COLOURS.values())[value])
    return np.asarray(image, np.int32)


def make_grid_pairs(seed: int, count: int, grid: int, values: int, out: Path, glyphs: bool = False
                    ) -> tuple[list[str], list[str], list[str]]:
    """``count`` (image, caption) pairs of a ``grid`` x ``grid`` board whose cells take one of
    ``values`` world colours (or glyphs) independently, pixel noise +-20; the caption names every
    cell by a word of its own and its colour. The third list (first cell's value) is for
    --hard-batches."""
    choices = list(GLYPHS if glyphs else COLOURS)
    if not 2 <= grid <= 5 or not 2 <= values <= len(choices):
        raise SystemExit(f"--grid takes 2..5 and --values 2..{len(choices)}")
    names = choices[:values]
    out.mkdir(parents=True, exist_ok=True)
    paths, captions, first = [], [], []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        cells = rng.integers(values, size=grid * grid)
        pixels = grid_board(cells, grid, glyphs) + rng.integers(-20, 21, size=(64, 64, 3))
        path = out / f"{index:05d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, compress_level=1)
        paths.append(str(path))
        captions.append(" ".join(f"{CELL_WORDS[c]} {names[v]}" for c, v in enumerate(cells)))
        first.append(names[cells[0]])
    return paths, captions, first


def spectrum(rows: np.ndarray, top: int = 12) -> list[float]:
    """The largest eigenvalues of the unit rows' covariance, as % of the total variance."""
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    return [round(float(v), 1) for v in 100 * eigenvalues[:top] / eigenvalues.sum()]


def measure(directory: Path, images: list[str], captions: list[str]) -> dict[str, float]:
    """Geometry of the held-out pairs through the trained space, and image -> text R@1."""
    space = load_space(f"clip:{directory}", device="cpu")
    image_rows = space.embed("image", images).numpy()
    text_rows = space.embed("text", captions).numpy()
    geometry = space_geometry(image_rows, text_rows, 0.004)
    result = {key: round(float(geometry[key]), 3) for key in
              ("effective_dim", "modality_gap", "gap_stability", "matched_cosine", "within_cosine")}
    result["effective_dim_text"] = round(effective_dim(text_rows), 1)
    result["image_spectrum_pct"] = spectrum(image_rows)
    similarity = torch.tensor(image_rows) @ torch.tensor(text_rows).T
    result["i2t_r1"] = round(float((similarity.argmax(1) == torch.arange(len(images))).float()
                                   .mean()), 3)
    return result


@contextlib.contextmanager
def reshaped_towers(width: int = 0, context: int = 0) -> Iterator[None]:
    """While open, build_toy_clip makes towers ``width`` wide (hidden size; MLP twice that)
    whose text tower reads ``context`` tokens; 0 keeps the toy's own."""
    transformers = require_transformers()
    original = transformers.CLIPConfig

    def config(text_config: dict, vision_config: dict, projection_dim: int):
        for tower in (text_config, vision_config) if width else ():
            tower.update(hidden_size=width, intermediate_size=2 * width)
        if context:
            text_config.update(max_position_embeddings=context)
        return original(text_config=text_config, vision_config=vision_config,
                        projection_dim=projection_dim)

    transformers.CLIPConfig = config
    try:
        yield
    finally:
        transformers.CLIPConfig = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="", help="comma list of frame, bg, badge")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--scale", type=float, default=100.0,
                        help="fixed, frozen logit scale (0: learned from 1/0.07)")
    parser.add_argument("--train", type=int, default=3000, help="training pairs")
    parser.add_argument("--test", type=int, default=1000, help="held-out pairs measured")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--width", type=int, default=0, help="tower width (default: the toy's 64)")
    parser.add_argument("--hard-batches", action="store_true",
                        help="batches of pairs that share their first concept (hard negatives)")
    parser.add_argument("--palette", type=int, default=0,
                        help="recolour the concepts from this many colours (default: the world's 11)")
    parser.add_argument("--world", choices=("concepts", "grid"), default="concepts",
                        help="the world's pictures and look captions, or a grid of coloured cells")
    parser.add_argument("--grid", type=int, default=3, help="--world grid: cells a side (2-5)")
    parser.add_argument("--values", type=int, default=11, help="--world grid: colours a cell takes")
    parser.add_argument("--glyphs", action="store_true",
                        help="--world grid: cells hold one of 5 white glyphs on black, not colours")
    args = parser.parse_args()
    factors = set(filter(None, args.factors.split(",")))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if args.world == "grid":
            *train, first_concepts = make_grid_pairs(0, args.train, args.grid, args.values,
                                                     root / "train", args.glyphs)
            *test, _ = make_grid_pairs(1, args.test, args.grid, args.values, root / "test",
                                       args.glyphs)
        else:
            concepts = recoloured_concepts(args.palette) if args.palette else list(CONCEPTS)
            *train, first_concepts = make_pairs(0, args.train, factors, root / "train", concepts)
            *test, _ = make_pairs(1, args.test, factors, root / "test", concepts)
        # a grid caption is two words a cell; the toy text tower reads 32 tokens
        context = 2 * args.grid ** 2 + 8 if args.world == "grid" else 0
        with reshaped_towers(args.width, context):
            directory = build_toy_clip(root / "clip", world_words(train[1] + test[1]), 64)
        space = load_space(f"clip:{directory}", device="cpu")
        media, text = collate_all(space, "image", train[0]), collate_all(space, "text", train[1])
        with quiet_transformers():
            model = require_transformers().CLIPModel.from_pretrained(directory)
        training = ToyTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               weight_decay=args.weight_decay, logit_scale=args.scale or None)
        start = time.perf_counter()
        order = grouped_order(first_concepts, args.batch_size) if args.hard_batches else None
        contrastive_training(model, media, text, training, True, "training toy CLIP", order)
        seconds = round(time.perf_counter() - start)
        with quiet_transformers():
            model.save_pretrained(directory)
        print(json.dumps({**vars(args), "factors": sorted(factors), "train_s": seconds,
                          **measure(directory, *test)}))


if __name__ == "__main__":
    main()
