"""The regime map: which C-MCR recipe wins at which geometry (``cmcr study regimes``).

Each cell is a :class:`~cmcr.study.geometry_data.Geometry` (participation ratio x modality gap
x matched cosine). In every cell and data seed, two spaces of that geometry are generated
directly as embeddings, connected by each recipe through ``cmcr.connect`` (the code users run),
and judged on held-out audio -> image pairs (positives: the same concept). Per-query scores
are kept, so every interval is a bootstrap over queries, stratified by seed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmcr.data.atomic import atomic_write_text
from cmcr.config import ConnectConfig
from cmcr.pipeline import connect
from cmcr.eval.intervals import RESAMPLES, per_query_retrieval, percentile_interval
from cmcr.spaces.geometry import space_geometry
from cmcr.study.geometry_data import Geometry, Sizes, make_two_spaces

PAPER = "cmcr"
# recipe -> its method overrides, each run through cmcr.connect as a user would set them
MAP_RECIPES: dict[str, dict[str, Any]] = {
    "cmcr": {},
    "no_noise": {"use_noise": False},
    "no_memory": {"use_memory": False},
    "no_pseudo_inter": {"use_pseudo_inter": False},
    "no_intra": {"use_intra": False},
    "centred": {"center_modalities": True},  # C3 / TextME: each modality minus its own mean
    "calibrated_noise": {"noise_calibration": 1.0},  # sigma^2 = the text-pseudo residual
    "centred_calibrated": {"center_modalities": True, "noise_calibration": 1.0},  # = cmcr+
    "normalized_pseudo": {"normalize_pseudo": True},
    "old_cmcr+": {"noise_cosine": 0.98, "memory_temperature": 0.005},  # cmcr+ until 2026-12
}
METRICS = ("R@1", "mAP")


def default_cells() -> list[Geometry]:
    """3 participation ratios x 4 (gap, matched cosine) pairs bracketing the old toy spaces
    (gap 0.1-0.2, matched 0.87-0.94, PR 6-9) and real CLIP (0.85, 0.31, PR ~40+)."""
    pairs = [(0.2, 0.87), (0.2, 0.3), (0.5, 0.6), (0.85, 0.31)]
    return [Geometry(effective_dim=pr, modality_gap=gap, matched_cosine=matched)
            for gap, matched in pairs for pr in (10.0, 40.0, 120.0)]


@dataclass
class StudySettings:
    """The map's grid, seeds, data sizes and training (the demo's head, a shorter run)."""

    cells: list[Geometry] = field(default_factory=default_cells)
    seeds: tuple[int, ...] = (0, 1, 2)
    recipes: tuple[str, ...] = tuple(MAP_RECIPES)
    sizes: Sizes = field(default_factory=Sizes)
    epochs: int = 16  # 256 steps: the paper's noise keeps improving past 128 (bench/ notes)
    batch_size: int = 256
    projector: dict[str, Any] = field(default_factory=lambda: {"hidden": 512, "out_dim": 256,
                                                               "layers": 2})


def cell_name(geometry: Geometry) -> str:
    return (f"pr{geometry.effective_dim:g}-gap{geometry.modality_gap:g}"
            f"-match{geometry.matched_cosine:g}")


def _write_arrays(arrays: dict[str, np.ndarray], directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("a_text", "b_text", "a_image", "b_audio"):
        paths[name] = str(directory / f"{name}.npy")
        np.save(paths[name], arrays[name])
    return paths


def _config(paths: dict[str, str], settings: StudySettings, method: dict[str, Any],
            seed: int) -> ConnectConfig:
    return ConnectConfig.from_dict({
        "shared_modality": "text",
        "spaces": {"clip": {"queries": paths["a_text"], "memory": paths["a_image"],
                            "memory_modality": "image"},
                   "clap": {"queries": paths["b_text"], "memory": paths["b_audio"],
                            "memory_modality": "audio"}},
        "train": {"epochs": settings.epochs, "batch_size": settings.batch_size, "seed": seed},
        "method": method, "projector": settings.projector})


def run_cell_seed(geometry: Geometry, seed: int, settings: StudySettings, directory: Path,
                  progress: bool = False) -> dict[str, Any]:
    """Every recipe on one generated dataset; ``scores.json`` in ``directory`` keeps the
    measured geometry and each recipe's per-query scores (recipes already there are reused)."""
    path = directory / "scores.json"
    training = {"sizes": asdict(settings.sizes), "epochs": settings.epochs,
                "batch_size": settings.batch_size, "projector": settings.projector}
    done = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if done.get("training", training) != training:  # made with other settings: redo it
        done = {}
    done.setdefault("scores", {})
    missing = [recipe for recipe in settings.recipes if recipe not in done["scores"]]
    if not missing:
        return done
    arrays = make_two_spaces(geometry, settings.sizes, seed)
    positives = arrays["test_concepts"][:, None] == arrays["test_concepts"][None, :]
    measured = {"a": space_geometry(arrays["test_image"], arrays["test_text_a"], 0.004),
                "b": space_geometry(arrays["test_audio"], arrays["test_text_b"], 0.004)}
    paths = _write_arrays(arrays, directory / "data")
    result = {"geometry": geometry.as_dict(), "seed": seed, "training": training,
              "measured": measured, "scores": dict(done["scores"])}
    for recipe in missing:
        model_dir = directory / "models" / recipe
        model = connect(_config(paths, settings, MAP_RECIPES[recipe], seed), model_dir,
                        device="cpu", progress=progress, label=f"{directory.parent.name} {recipe}")
        similarity = (model.project("clap", arrays["test_audio"], "audio").numpy()
                      @ model.project("clip", arrays["test_image"], "image").numpy().T)
        per_query = per_query_retrieval(similarity, positives, ks=(1,))
        result["scores"][recipe] = {key: per_query[key].round(4).tolist() for key in METRICS}
        atomic_write_text(path, json.dumps(result) + "\n")  # each recipe kept as it finishes
        shutil.rmtree(model_dir)  # the scores are what the map needs; models are 10 MB each
    shutil.rmtree(directory / "data")
    shutil.rmtree(directory / "models", ignore_errors=True)
    return result


def stratified_means(per_seed: Sequence[np.ndarray], resamples: int = RESAMPLES,
                     seed: int = 0) -> np.ndarray:
    """Bootstrap means of the pooled queries, each seed's queries resampled within that seed
    (the same draws for every method given the same ``seed``): (resamples,)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    count = sum(len(values) for values in per_seed)
    for values in per_seed:
        values = np.nan_to_num(np.asarray(values, dtype=np.float64))
        draws = rng.integers(0, len(values), size=(resamples, len(values)))
        total += values[draws].sum(axis=1)
    return total / count


def summarise_cell(results: Sequence[dict[str, Any]], recipes: Sequence[str]) -> dict[str, Any]:
    """One cell over its seeds: each recipe's mean and interval, its paired effect over the
    paper's recipe, and the recommendation (the paper's, unless another recipe beats it with
    an R@1 interval that excludes zero: then the one with the largest such effect)."""
    table: dict[str, Any] = {}
    for recipe in recipes:
        row = {}
        for metric in METRICS:
            values = [np.asarray(r["scores"][recipe][metric]) for r in results]
            paper = [np.asarray(r["scores"][PAPER][metric]) for r in results]
            mean = float(np.mean(np.concatenate(values)))
            effect = [v - p for v, p in zip(values, paper)]
            low, high = percentile_interval(stratified_means(effect))
            row[metric] = {"mean": mean, "ci95": percentile_interval(stratified_means(values)),
                           "minus_cmcr": {"effect": float(np.mean(np.concatenate(effect))),
                                          "ci95": [low, high],
                                          "significant": bool(low > 0 or high < 0)}}
        table[recipe] = row
    better = {name: row["R@1"]["minus_cmcr"]["effect"] for name, row in table.items()
              if name != PAPER and row["R@1"]["minus_cmcr"]["ci95"][0] > 0}
    recommended = max(better, key=better.get) if better else PAPER
    measured = {space: {key: float(np.mean([r["measured"][space][key] for r in results]))
                        for key in results[0]["measured"][space]}
                for space in results[0]["measured"]}
    return {"geometry": results[0]["geometry"], "measured": measured, "seeds": len(results),
            "recipes": table, "recommended": recommended,
            "noise_effect_R@1": table["cmcr"]["R@1"]["mean"] - table["no_noise"]["R@1"]["mean"]
            if "no_noise" in table else None}


def run_study(out_dir: str | Path, settings: StudySettings | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Every cell x seed (each reused when done), then ``regimes.json``, ``regimes.md`` and
    ``regimes.png`` in ``out_dir``."""
    from tqdm.auto import tqdm

    from cmcr.study.report import write_study_report

    settings = settings or StudySettings()
    out_dir = Path(out_dir)
    cells = []
    bar = tqdm(total=len(settings.cells) * len(settings.seeds), desc="regime map", unit="dataset",
               disable=not progress)
    for geometry in settings.cells:
        results = []
        for seed in settings.seeds:
            results.append(run_cell_seed(geometry, seed, settings,
                                         out_dir / "cells" / cell_name(geometry) / f"seed-{seed}"))
            bar.update(1)
        cells.append({"name": cell_name(geometry), **summarise_cell(results, settings.recipes)})
    bar.close()
    text = json.dumps({"settings": _settings_record(settings), "cells": cells}, indent=2)
    (out_dir / "regimes.json").write_text(text + "\n", encoding="utf-8")
    summary = json.loads(text)  # what a reader of regimes.json gets (lists, not tuples)
    write_study_report(out_dir, summary)
    return summary


def _settings_record(settings: StudySettings) -> dict[str, Any]:
    record = asdict(replace(settings, cells=[]))
    record["cells"] = [g.as_dict() for g in settings.cells]
    record["recipes"] = {name: {"method": MAP_RECIPES[name]} for name in settings.recipes}
    return record
