"""``cmcr demo --seeds 0,1,2``: the demo on several world seeds, and the mean and spread of
every number over them. Seed N's run lives in ``OUT/seed-N`` and is reused when it is complete
for the same settings, so an interrupted study resumes where it stopped."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from cmcr.spaces.geometry import GEOMETRY_KEYS
from cmcr.eval.intervals import spread
from cmcr.runtime import write_json
from cmcr.world.demo import DIRECTIONS, DemoSettings, run_demo

SEED_DIR = "seed-{}"


def seed_dir(out_dir: Path, seed: int) -> Path:
    return out_dir / SEED_DIR.format(seed)


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def completed_run(run_dir: Path, settings: DemoSettings) -> dict[str, Any] | None:
    """The metrics of a finished run in ``run_dir`` made with ``settings`` (and this metrics
    schema: per-component effects), else None."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("config") != _as_json(asdict(settings)) or "components" not in metrics:
        return None
    return metrics


def run_seeds(out_dir: str | Path, settings: DemoSettings, seeds: Sequence[int],
              progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) the demo for every seed; write the aggregate ``metrics.json`` and
    ``report.md`` in ``out_dir`` and return the aggregate."""
    from cmcr.world.report import write_seeds_report

    out_dir = Path(out_dir)
    runs = {}
    for seed in seeds:
        seeded = replace(settings, seed=seed)
        runs[seed] = completed_run(seed_dir(out_dir, seed), seeded)
        if runs[seed] is None:
            log(f"seed {seed}: running the demo in {seed_dir(out_dir, seed)}")
            runs[seed] = run_demo(seed_dir(out_dir, seed), seeded, progress=progress)
        else:
            log(f"seed {seed}: reusing the finished run in {seed_dir(out_dir, seed)}")
    summary = aggregate([runs[seed] for seed in seeds])
    write_json(out_dir / "metrics.json", summary)
    write_seeds_report(out_dir, summary)
    return summary


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation, range and t-interval over runs of every retrieval metric,
    component effect, regime figure and the C-MCR / upper bound ratio (methods and components
    present in every run only)."""
    methods = [m for m in runs[0]["methods"] if all(m in r["methods"] for r in runs)]
    metric_keys = list(runs[0]["methods"][methods[0]][DIRECTIONS[0]]) if methods else []
    metric_keys = [k for k in metric_keys if k != "ci95"]
    return {
        "seeds": [r["seed"] for r in runs],
        "test_pairs": [r["test_pairs"] for r in runs],
        "methods": {m: {d: {k: spread([r["methods"][m][d][k] for r in runs]) for k in metric_keys}
                        for d in DIRECTIONS} for m in methods},
        "components": _components_over_seeds([r.get("components", {}) for r in runs],
                                             metric_keys),
        "regime": _regime_over_seeds(runs),
        "recipe": _recipe_over_seeds(runs, metric_keys),
        **{key: spread([r[key] for r in runs if r.get(key) is not None] or [float("nan")])
           for key in ("cmcr_to_upper_bound_R@1", "cmcr+_to_upper_bound_R@1")
           if any(key in r for r in runs)},
    }


def _effects_over_seeds(blocks: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """direction -> metric -> a paired effect's spread over seeds (one block per seed)."""
    return {d: {k: _effect_over_seeds([b[d][k] for b in blocks]) for k in keys}
            for d in DIRECTIONS}


def _components_over_seeds(blocks: Sequence[dict[str, Any]], keys: Sequence[str]
                           ) -> dict[str, Any]:
    """Each component (an ablation's paired effect) present in every run's block, over seeds:
    the paper's components and the recipe's additions alike."""
    names = [c for c in blocks[0] if all(c in block for block in blocks)]
    return {c: {"ablation": blocks[0][c]["ablation"],
                **_effects_over_seeds([block[c] for block in blocks], keys)}
            for c in names}


def _recipe_over_seeds(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """cmcr+ minus C-MCR and each addition's effect over seeds (when every run has cmcr+)."""
    recipes = [r.get("recipe") or {} for r in runs]
    if not all(recipes):
        return {}
    return {"name": recipes[0]["name"], "method": recipes[0]["method"],
            "minus_cmcr": _effects_over_seeds([r["minus_cmcr"] for r in recipes], keys),
            "components": _components_over_seeds([r["components"] for r in recipes], keys)}


def _effect_over_seeds(effects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A component's effect over seeds: its spread, and on how many seeds the per-seed paired
    interval lay wholly above or below zero."""
    return {**spread([e["effect"] for e in effects]),
            "seeds_significant_positive": sum(e["significant"] and e["effect"] > 0 for e in effects),
            "seeds_significant_negative": sum(e["significant"] and e["effect"] < 0 for e in effects)}


def _regime_over_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not all("regime" in r for r in runs):
        return {}
    spaces = runs[0]["regime"]
    return {space: {key: spread([r["regime"][space][key] for r in runs])
                    for key in GEOMETRY_KEYS[1:]
                    if all(r["regime"][space].get(key) is not None for r in runs)}
            | {"dim": values["dim"], "noise_var": values["noise_var"]}
            | ({"reference": values["reference"]} if "reference" in values else {})
            for space, values in spaces.items()}
