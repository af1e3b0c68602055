"""Choose ``cmcr+`` among the gap-aware options on *selection* data only.

Selection data, never used to judge: the built-in world at seed 100 (the demo judges seeds 0-4)
and the regime map's generated data at seed 100 in two cells that are not saturated (the map
judges seeds 0-2): real CLIP's geometry (PR 40, gap 0.85, matched 0.31) and a middle one (PR 40,
gap 0.5, matched 0.6). Every candidate is trained through ``cmcr.connect`` with the demo's (or
the map's) settings and scored on held-out audio -> image R@1; the chosen recipe is the one with
the best mean R@1 over the selection datasets, each weighted equally. Scores are cached in
OUT/choose_gap_recipe.json, so an interrupted run resumes. (The previous cmcr+, a greedy forward
selection on the toy world alone, is recorded in docs/recipes.md.)

    OMP_NUM_THREADS=1 python bench/choose_recipe.py --out runs/choose-recipe
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr.pipeline import connect
from cmcr.study import regimes
from cmcr.study.geometry_data import Geometry
from cmcr.world import demo
from cmcr.world.generate import WorldManifest, WorldSizes
from cmcr.world.stages import FrozenEmbeddings, embed_world, records_field

SELECTION_SEED = 100
CELLS = (Geometry(40.0, 0.85, 0.31), Geometry(40.0, 0.5, 0.6))
# name -> method overrides
CANDIDATES: dict[str, dict[str, Any]] = {
    "cmcr": {},
    "no_noise": {"use_noise": False},
    "calibrated k=0.5": {"noise_calibration": 0.5},
    "calibrated k=1": {"noise_calibration": 1.0},
    "calibrated k=2": {"noise_calibration": 2.0},
    "centred": {"center_modalities": True},
    "centred + calibrated k=1": {"center_modalities": True, "noise_calibration": 1.0},
    "normalized pseudo": {"normalize_pseudo": True},
    "old cmcr+": {"noise_cosine": 0.98, "memory_temperature": 0.005},
}


@dataclass
class SeedContext:
    """One selection world, embedded."""

    seed: int
    settings: demo.DemoSettings
    out: Path
    world: WorldManifest
    spaces: dict[str, Any]
    frozen: FrozenEmbeddings
    positives: np.ndarray


def scaled_sizes(scale: float) -> WorldSizes:
    """``cmcr demo --scale``'s sizes (its own function when the CLI offers it)."""
    try:
        from cmcr.cli.world import _sizes

        return _sizes(scale)
    except ImportError:
        default, fixed = WorldSizes(), {"image_size", "sample_rate"}
        return WorldSizes(**{f.name: getattr(default, f.name) if f.name in fixed
                             else max(8, int(round(getattr(default, f.name) * scale)))
                             for f in dataclasses.fields(default)})


def prepare_seed(seed: int, out: Path, scale: float, epochs: int | None,
                 progress: bool) -> SeedContext:
    """World and embeddings of one seed, as ``run_demo`` makes them."""
    settings = demo.DemoSettings(seed=seed, sizes=scaled_sizes(scale))
    if epochs is not None:
        settings.epochs = epochs
    seed_dir = out / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    world = demo.prepare_world(seed_dir, settings, progress)
    spaces = demo.load_toy_spaces(settings)
    frozen = embed_world(world, spaces, seed_dir / "emb", progress, settings.workers)
    concepts = records_field(world, "test_pairs", "concept")
    positives = demo.concept_positives(concepts, concepts)
    return SeedContext(seed, settings, seed_dir, world, spaces, frozen, positives)


def method_key(method: dict[str, Any]) -> str:
    return json.dumps(method, sort_keys=True)


def score(context: SeedContext, method: dict[str, Any]) -> dict[str, Any]:
    """Train one method setting on this seed's world; audio->image R@1/mAP and retention."""
    name = "m-" + hashlib.sha256(method_key(method).encode()).hexdigest()[:12]
    config = demo._connect_config(context.frozen.stores, context.settings, method)
    started = time.perf_counter()
    model = connect(config, context.out / "models" / name, device="cpu",
                    cache_dir=context.out / "cache", progress=False)
    methods, _ = demo.retrieval_with_intervals({"m": model}, context.frozen, context.positives)
    kept = demo.retention(model, context.spaces, context.world, context.frozen)
    result = {key: methods["m"]["audio_to_image"][key] for key in ("R@1", "mAP")}
    result["R@1_ci95"] = methods["m"]["audio_to_image"]["ci95"]["R@1"]
    result["retention"] = {space: kept[key]["joint"] / kept[key]["original"]
                           for space, key in (("clip", "image_text_top1"),
                                              ("clap", "audio_text_top1"))}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def score_cell(geometry: Geometry, out: Path) -> dict[str, float]:
    """Each candidate's R@1 on the map's data of one cell at the selection seed."""
    for name, method in CANDIDATES.items():
        regimes.MAP_RECIPES[f"select:{name}"] = method
    settings = regimes.StudySettings(recipes=tuple(f"select:{name}" for name in CANDIDATES))
    result = regimes.run_cell_seed(geometry, SELECTION_SEED, settings,
                                   out / regimes.cell_name(geometry))
    return {name: float(np.mean(result["scores"][f"select:{name}"]["R@1"])) for name in CANDIDATES}


def score_world(out: Path, progress: bool) -> dict[str, float]:
    context = prepare_seed(SELECTION_SEED, out / "world", 1.0, None, progress)
    return {name: score(context, method)["R@1"] for name, method in CANDIDATES.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "choose_gap_recipe.json"
    scores = json.loads(cache.read_text()) if cache.exists() else {}
    datasets = {f"world seed {SELECTION_SEED}": lambda: score_world(out, not args.quiet)}
    datasets |= {f"map {regimes.cell_name(g)} seed {SELECTION_SEED}":
                 (lambda g=g: score_cell(g, out / "map")) for g in CELLS}
    for name, run in datasets.items():
        if name not in scores:
            scores[name] = run()
            cache.write_text(json.dumps(scores, indent=2) + "\n")
    mean = {c: float(np.mean([scores[d][c] for d in datasets])) for c in CANDIDATES}
    chosen = max(mean, key=mean.get)
    print("| candidate | " + " | ".join(datasets) + " | mean |")
    print("|---|" + "---|" * (len(datasets) + 1))
    for c in CANDIDATES:
        cells = " | ".join(f"{scores[d][c]:.1f}" for d in datasets)
        print(f"| {'**' + c + '**' if c == chosen else c} | {cells} | {mean[c]:.1f} |")
    print(f"chosen: {chosen} {CANDIDATES[chosen]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
