"""Choose ``cmcr+`` among the gap-aware options on *selection* data only.

Selection data, never used to judge: the built-in world at seed 100 (the demo judges seeds 0-4)
and the regime map's generated data at seed 100 in two cells that are not saturated (the map
judges seeds 0-2): real CLIP's geometry (PR 40, gap 0.85, matched 0.31) and a middle one (PR 40,
gap 0.5, matched 0.6). Every candidate is trained through ``cmcr.connect`` with the demo's (or
the map's) settings and scored on held-out audio -> image R@1; the chosen recipe is the one with
the best mean R@1 over the selection datasets, each weighted equally. Scores are cached in
OUT/choose_gap_recipe.json, so an interrupted run resumes.

    OMP_NUM_THREADS=1 python bench/choose_gap_recipe.py --out runs/choose-gap-recipe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.study import regimes
from cmcr.study.geometry_data import Geometry

sys.path.insert(0, str(Path(__file__).parent))
from choose_recipe import prepare_seed, score  # noqa: E402  (the toy world's scoring)

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
