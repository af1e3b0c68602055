"""Generate the world to disk (PNG images, 16-bit WAV clips, one JSONL per split) and load it.

Item ``i`` of split ``s`` is drawn from ``default_rng([seed, s, i])`` alone, so generation is
deterministic, and a smaller size gives a prefix of a larger one. Splits never share files.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile
from tqdm.auto import tqdm

from cmcr.errors import CmcrError
from cmcr.world.captions import look_caption, sound_caption
from cmcr.world.concepts import CONCEPTS, Concept
from cmcr.world.render import render_audio, render_image

FORMAT_VERSION = 3  # 2: adds the paired_train split; 3: 128 concepts
MANIFEST_FILE = "world.json"
MIN_SECONDS, MAX_SECONDS = 1.0, 4.0


@dataclass(frozen=True)
class WorldSizes:
    """How many items each split holds, and the media format."""

    clip_pairs: int = 10000
    clap_pairs: int = 10000
    connect_texts: int = 8192
    image_memory: int = 4000
    audio_memory: int = 4000
    test_pairs: int = 500
    localisation_scenes: int = 100
    counterfactual_pairs: int = 300
    paired_pairs: int = 6000
    image_size: int = 64
    sample_rate: int = 16000


@dataclass
class WorldManifest:
    """A generated world on disk: each split is a list of JSON records with paths under ``root``."""

    root: Path
    seed: int
    sizes: WorldSizes
    clip_train: list[dict]
    clap_train: list[dict]
    connect_texts: list[dict]
    image_memory: list[dict]
    audio_memory: list[dict]
    test_pairs: list[dict]
    localisation: list[dict]
    counterfactual: list[dict]
    paired_train: list[dict]
    pruned: tuple[str, ...] = ()  # splits whose media files were deleted (see prune_media)

    @property
    def splits(self) -> dict[str, list[dict]]:
        """Split name -> records, in generation order."""
        return {name: getattr(self, name) for name in SPLIT_NAMES}

    def path(self, relative: str) -> Path:
        """Absolute path of a record's ``image`` or ``audio`` entry."""
        return self.root / relative


@dataclass
class _Context:
    out_dir: Path
    sizes: WorldSizes
    split: str

    def media(self, index: int, suffix: str) -> str:
        return f"{self.split}/{index:06d}.{suffix}"


# ----------------------------------------------------------------------------- items
def _draw(rng: np.random.Generator, count: int) -> list[Concept]:
    """``count`` distinct concepts in random order."""
    return [CONCEPTS[i] for i in rng.permutation(len(CONCEPTS))[:count]]


def _write_image(ctx: _Context, index: int, objects: list[Concept],
                 rng: np.random.Generator) -> tuple[str, list[list[int]]]:
    image, boxes = render_image(objects, rng, ctx.sizes.image_size)
    relative = ctx.media(index, "png")
    image.save(ctx.out_dir / relative, compress_level=1)
    return relative, [list(box) for box in boxes]


def _write_audio(ctx: _Context, index: int, sources: list[Concept],
                 rng: np.random.Generator) -> tuple[str, list[dict], float]:
    seconds = round(float(rng.uniform(MIN_SECONDS, MAX_SECONDS)), 2)
    wave, records = render_audio(sources, rng, seconds, ctx.sizes.sample_rate)
    relative = ctx.media(index, "wav")
    encoded = io.BytesIO()  # soundfile writing straight to disk flushes often: 4x slower
    soundfile.write(encoded, wave, ctx.sizes.sample_rate, subtype="PCM_16", format="WAV")
    (ctx.out_dir / relative).write_bytes(encoded.getvalue())
    return relative, records, seconds


def _names(concepts: list[Concept]) -> list[str]:
    return [c.name for c in concepts]


def _clip_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    objects = _draw(rng, int(rng.integers(1, 4)))
    image, boxes = _write_image(ctx, index, objects, rng)
    return {"image": image, "concepts": _names(objects), "boxes": boxes,
            "caption": look_caption(objects, rng, [tuple(b) for b in boxes])}


def _clap_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    sources = _draw(rng, int(rng.integers(1, 3)))
    audio, records, seconds = _write_audio(ctx, index, sources, rng)
    return {"audio": audio, "duration": seconds, "concepts": _names(sources),
            "sources": records, "caption": sound_caption(sources, rng)}


def _text_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    style = "look" if index % 2 == 0 else "sound"  # exactly half of each style
    concepts = _draw(rng, int(rng.integers(1, 4 if style == "look" else 3)))
    caption = look_caption(concepts, rng) if style == "look" else sound_caption(concepts, rng)
    return {"style": style, "concepts": _names(concepts), "caption": caption}


def _image_memory_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    objects = _draw(rng, int(rng.integers(1, 4)))
    image, boxes = _write_image(ctx, index, objects, rng)
    return {"image": image, "concepts": _names(objects), "boxes": boxes}


def _audio_memory_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    sources = _draw(rng, int(rng.integers(1, 3)))
    audio, records, seconds = _write_audio(ctx, index, sources, rng)
    return {"audio": audio, "duration": seconds, "concepts": _names(sources), "sources": records}


def _test_pair_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    """Image and clip share their first concept (the sounding one); the others differ."""
    n_objects, n_sources = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    drawn = _draw(rng, n_objects + n_sources - 1)
    objects, sources = drawn[:n_objects], [drawn[0], *drawn[n_objects:]]
    image, boxes = _write_image(ctx, index, objects, rng)
    audio, records, seconds = _write_audio(ctx, index, sources, rng)
    return {"image": image, "audio": audio, "concept": drawn[0].name,
            "image_concepts": _names(objects), "boxes": boxes,
            "audio_concepts": _names(sources), "sources": records, "duration": seconds,
            "look_caption": look_caption(objects, rng, [tuple(b) for b in boxes]),
            "sound_caption": sound_caption(sources, rng)}


def _localisation_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    """Two objects, one of which sounds alone in the clip; ``box`` is the sounding object's."""
    objects = _draw(rng, 2)
    sounding = int(rng.integers(2))
    image, boxes = _write_image(ctx, index, objects, rng)
    audio, records, seconds = _write_audio(ctx, index, [objects[sounding]], rng)
    return {"image": image, "audio": audio, "concept": objects[sounding].name,
            "sounding_index": sounding, "box": boxes[sounding],
            "image_concepts": _names(objects), "boxes": boxes, "sources": records,
            "duration": seconds}


def _counterfactual_item(ctx: _Context, index: int, rng: np.random.Generator) -> dict:
    """Even items match (the sound is one of the objects), odd items do not (it is absent)."""
    label = int(index % 2 == 0)
    n_objects = int(rng.integers(1, 4))
    drawn = _draw(rng, n_objects + 1)
    objects = drawn[:n_objects]
    sound = objects[int(rng.integers(n_objects))] if label else drawn[n_objects]
    image, boxes = _write_image(ctx, index, objects, rng)
    audio, records, seconds = _write_audio(ctx, index, [sound], rng)
    return {"image": image, "audio": audio, "label": label, "concept": sound.name,
            "image_concepts": _names(objects), "boxes": boxes, "sources": records,
            "duration": seconds}


ItemMaker = Callable[[_Context, int, np.random.Generator], dict]
# (split name, WorldSizes field giving its length, item maker); the position is the split's seed
SPLITS: tuple[tuple[str, str, ItemMaker], ...] = (
    ("clip_train", "clip_pairs", _clip_item),
    ("clap_train", "clap_pairs", _clap_item),
    ("connect_texts", "connect_texts", _text_item),
    ("image_memory", "image_memory", _image_memory_item),
    ("audio_memory", "audio_memory", _audio_memory_item),
    ("test_pairs", "test_pairs", _test_pair_item),
    ("localisation", "localisation_scenes", _localisation_item),
    ("counterfactual", "counterfactual_pairs", _counterfactual_item),
    # true audio-image pairs, drawn like test_pairs: only for the demo's paired upper bound
    ("paired_train", "paired_pairs", _test_pair_item),
)
SPLIT_NAMES = tuple(name for name, _, _ in SPLITS)


# ----------------------------------------------------------------------------- disk
def _generate_split(out_dir: Path, seed: int, sizes: WorldSizes, split_index: int,
                    progress: bool) -> list[dict]:
    name, size_field, make = SPLITS[split_index]
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    ctx = _Context(out_dir, sizes, name)
    records = []
    count = getattr(sizes, size_field)
    for index in tqdm(range(count), desc=name, disable=not progress or count == 0):
        rng = np.random.default_rng([seed, split_index, index])
        records.append({"id": f"{name}/{index:06d}", **make(ctx, index, rng)})
    with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return records


def generate_world(out_dir: str | Path, seed: int = 0, sizes: WorldSizes = WorldSizes(),
                   progress: bool = True) -> WorldManifest:
    """Write the world under ``out_dir`` (same seed and sizes: same bytes); return its manifest."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    splits = {name: _generate_split(root, seed, sizes, i, progress)
              for i, name in enumerate(SPLIT_NAMES)}
    world = WorldManifest(root=root, seed=seed, sizes=sizes, **splits)
    _write_header(world)
    return world


def _write_header(world: WorldManifest) -> None:
    header = {"format": "cmcr-world", "version": FORMAT_VERSION, "seed": world.seed,
              "sizes": asdict(world.sizes), "concepts": [c.name for c in CONCEPTS],
              "splits": {name: f"{name}.jsonl" for name in SPLIT_NAMES},
              "pruned": list(world.pruned)}
    (world.root / MANIFEST_FILE).write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")


def prune_media(world: WorldManifest, splits: tuple[str, ...]) -> WorldManifest:
    """Delete the media files of ``splits`` (their records stay): for splits only needed as
    embeddings. :func:`restore_media` regenerates them, byte for byte, when they are needed."""
    for split in splits:
        for record in getattr(world, split):
            for key in ("image", "audio"):
                if key in record:
                    world.path(record[key]).unlink(missing_ok=True)
    world.pruned = tuple(sorted(set(world.pruned) | set(splits)))
    _write_header(world)
    return world


def restore_media(world: WorldManifest, split: str, progress: bool = True) -> WorldManifest:
    """Regenerate a pruned split's media (items are drawn from their own seeds: same bytes)."""
    if split in world.pruned:
        _generate_split(world.root, world.seed, world.sizes, SPLIT_NAMES.index(split), progress)
        world.pruned = tuple(name for name in world.pruned if name != split)
        _write_header(world)
    return world


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise CmcrError(f"world split file {path} is missing; regenerate the world with "
                        f"generate_world() (or `cmcr demo`)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise CmcrError(f"{path} line {line_number} is not valid JSON ({error}); "
                                f"regenerate the world") from error
    return records


def _check_media(root: Path, split: str, records: list[dict]) -> None:
    for record in records:
        for key in ("image", "audio"):
            if key in record and not (root / record[key]).is_file():
                raise CmcrError(f"world file {root / record[key]} (split {split}, "
                                f"record {record['id']}) is missing; regenerate the world")


def load_world(out_dir: str | Path) -> WorldManifest:
    """Read a world written by :func:`generate_world`; a missing file is a CmcrError naming it."""
    root = Path(out_dir)
    header_path = root / MANIFEST_FILE
    if not header_path.is_file():
        raise CmcrError(f"world manifest {header_path} is missing; generate the world first "
                        f"with generate_world() (or `cmcr demo`)")
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CmcrError(f"world manifest {header_path} is not valid JSON ({error}); "
                        f"regenerate the world") from error
    if header.get("format") != "cmcr-world" or header.get("version") != FORMAT_VERSION:
        raise CmcrError(f"{header_path} is not a version-{FORMAT_VERSION} cmcr world "
                        f"(format {header.get('format')!r}, version {header.get('version')!r}); "
                        f"regenerate it with this version of cmcr")
    known = {f.name for f in fields(WorldSizes)}
    sizes = WorldSizes(**{k: v for k, v in header["sizes"].items() if k in known})
    pruned = tuple(header.get("pruned", ()))
    splits = {}
    for name in SPLIT_NAMES:
        splits[name] = _read_jsonl(root / header["splits"].get(name, f"{name}.jsonl"))
        if name not in pruned:
            _check_media(root, name, splits[name])
    return WorldManifest(root=root, seed=header["seed"], sizes=sizes, pruned=pruned, **splits)
