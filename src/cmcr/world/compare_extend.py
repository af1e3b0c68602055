"""Extend mode against C-MCR in the built-in world (metrics.json's ``extend``).

The toy CLAP is extended into the toy CLIP (Ex-MCR) from the same stores C-MCR connects (the
same texts, the same unpaired image and audio memories, the same epochs and batch size), then
both are judged on the same held-out audio-image pairs, with bootstrap intervals over the test
queries and the paired difference extend - C-MCR, and on retention: zero-shot image->text and
audio->text top-1 in each model's space against the original toy spaces. Ablations retrain the
extension without Ex-MCR's query sets from the memories, or with the text-text pair only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.config import ConnectConfig
from cmcr.pipeline import connect
from cmcr.eval import intervals, metrics
from cmcr.method.model import ConnectedModel
from cmcr.data.store import open_store
from cmcr.world.concepts import CONCEPTS
from cmcr.world.generate import WorldManifest
from cmcr.world.stages import (AUDIO_PROMPT, IMAGE_PROMPT, FrozenEmbeddings, prompt_embeddings,
                               records_field, zero_shot_top1)

# name -> extend-config overrides; 'extend' is Ex-MCR's whole pipeline
VARIANTS: dict[str, dict[str, Any]] = {
    "extend": {},
    "extend_text_queries": {"queries": ["text"]},  # C-MCR's data: text queries only
    "extend_text_pair": {"pairs": ["text-text"]},  # no dense objective: the text pair only
}
BOOTSTRAP_SEED = 0
METRICS = ("R@1", "mAP")


def extend_config(stores: dict[str, Path], settings: Any, extend: dict[str, Any]) -> ConnectConfig:
    """The demo's connection, in extend mode: CLIP the frozen base, CLAP the leaf with Ex-MCR's
    head at the demo's projector width, the same training settings as C-MCR."""
    width = settings.projector.get("hidden", 256)
    return ConnectConfig.from_dict({
        "mode": "extend", "shared_modality": "text",
        "spaces": {
            "clip": {"queries": str(stores["clip_text"]), "memory": str(stores["clip_image_memory"]),
                     "memory_modality": "image"},
            "clap": {"queries": str(stores["clap_text"]), "memory": str(stores["clap_audio_memory"]),
                     "memory_modality": "audio"},
        },
        "extend": {"base": "clip", **extend},
        "train": {"epochs": settings.epochs, "batch_size": settings.batch_size,
                  "seed": settings.seed},
        "method": {"temperature": settings.temperature},
        "projector": {"kind": "exmcr", "hidden": width, "layers": 2,
                      "out_dim": open_store(stores["clip_text"]).dim},
    })


def _scored(model: ConnectedModel, frozen: FrozenEmbeddings, positives: np.ndarray
            ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """audio->image point metrics and per-query scores of one model on the test pairs."""
    similarity = _joint(model, "clap", frozen["test_audio"]) @ _joint(model, "clip",
                                                                     frozen["test_image"]).T
    return (metrics.retrieval_metrics(similarity, positives),
            intervals.per_query_retrieval(similarity, positives))


def retention(models: dict[str, ConnectedModel], spaces: dict[str, Any],
              world: WorldManifest, frozen: FrozenEmbeddings) -> dict[str, Any]:
    """Zero-shot top-1 in the original spaces and in each model's space: image->text (CLIP
    prompts), audio->text with CLAP's prompts (its own alignment kept?) and with CLIP's prompts
    (the audio reaching the other space's texts)."""
    names = [concept.name for concept in CONCEPTS]
    prompts = {"image": prompt_embeddings(spaces["clip"], names, IMAGE_PROMPT),
               "audio_clap": prompt_embeddings(spaces["clap"], names, AUDIO_PROMPT),
               "audio_clip": prompt_embeddings(spaces["clip"], names, AUDIO_PROMPT)}
    image, audio = frozen["test_image"], frozen["test_audio"]
    in_image = records_field(world, "test_pairs", "image_concepts")
    in_audio = records_field(world, "test_pairs", "audio_concepts")
    def top1(rows: np.ndarray, prompt_rows: np.ndarray, present: list[list[str]]) -> float:
        return zero_shot_top1(rows, prompt_rows, names, present)

    table = {"original": {"image_text": top1(image, prompts["image"], in_image),
                          "audio_text_clap": top1(audio, prompts["audio_clap"], in_audio)}}
    for name, model in models.items():
        joint_image, joint_audio = _joint(model, "clip", image), _joint(model, "clap", audio)
        table[name] = {
            "image_text": top1(joint_image, _joint(model, "clip", prompts["image"]), in_image),
            "audio_text_clap": top1(joint_audio, _joint(model, "clap", prompts["audio_clap"]),
                                    in_audio),
            "audio_text_clip": top1(joint_audio, _joint(model, "clip", prompts["audio_clip"]),
                                    in_audio)}
    return table


def _joint(model: ConnectedModel, space: str, rows: np.ndarray) -> np.ndarray:
    return model.project(space, rows).numpy()


def base_kept(model: ConnectedModel, frozen: FrozenEmbeddings) -> float:
    """Largest difference between a test image's CLIP row and its row in the extended space."""
    image = frozen["test_image"]
    unit = image / np.linalg.norm(image, axis=1, keepdims=True)
    return float(np.abs(_joint(model, "clip", image) - unit).max())


def train_variants(frozen: FrozenEmbeddings, out_dir: Path, settings: Any,
                   progress: bool) -> dict[str, ConnectedModel]:
    """Extend mode, and its ablations when ``settings.extend_ablations``, each through
    ``cmcr.connect`` (the pool cached once)."""
    names = list(VARIANTS) if getattr(settings, "extend_ablations", True) else ["extend"]
    return {name: connect(extend_config(frozen.stores, settings, VARIANTS[name]),
                          out_dir / "models" / name, device="cpu", cache_dir=out_dir / "cache",
                          progress=progress)
            for name in names}


def compare_extend(out_dir: Path, settings: Any, frozen: FrozenEmbeddings,
                   spaces: dict[str, Any], world: WorldManifest, cmcr: ConnectedModel,
                   positives: np.ndarray, progress: bool = True) -> dict[str, Any]:
    """Train the extensions and compare them with ``cmcr`` (see the module docstring)."""
    started = time.perf_counter()
    models = {"cmcr": cmcr, **train_variants(frozen, out_dir, settings, progress)}
    scored = {name: _scored(model, frozen, positives) for name, model in models.items()}
    audio_to_image = {
        name: {**{key: point[key] for key in METRICS},
               "ci95": {key: intervals.bootstrap_interval(per_query[key], seed=BOOTSTRAP_SEED)
                        for key in METRICS}}
        for name, (point, per_query) in scored.items()}
    return {"audio_to_image": audio_to_image,
            "extend_minus_cmcr": _paired(scored, "extend", "cmcr"),
            "extend_minus_ablation": {name: _paired(scored, "extend", name)
                                      for name in VARIANTS if name != "extend" and name in scored},
            "retention": retention(models, spaces, world, frozen),
            "base_max_abs_difference": base_kept(models["extend"], frozen),
            "variants": {name: overrides for name, overrides in VARIANTS.items()},
            "seconds": round(time.perf_counter() - started, 2)}


INTRO = ("The toy CLAP extended into the frozen toy CLIP (Ex-MCR), from the same texts and "
         "unpaired memories as C-MCR{ablations}. audio -> image on the test pairs (percent, 95% "
         "bootstrap interval over the queries):")
ABLATIONS_NOTE = ("; extend_text_queries drops the audio- and image-centred queries, "
                  "extend_text_pair keeps only the text-text pair of the dense objective")
RETENTION = ("Retention, zero-shot top-1 (percent): image -> text with CLIP's prompts; "
             "audio -> text with CLAP's prompts and with CLIP's:")
RETENTION_HEADER = ("| space | image -> text | audio -> text (CLAP prompts) | "
                    "audio -> text (CLIP prompts) |")


def _interval(value: float, interval: list[float], signed: bool = False) -> str:
    form = "+.1f" if signed else ".1f"
    return f"{value:{form}} [{interval[0]:{form}}, {interval[1]:{form}}]"


def _paired(scored: dict[str, Any], treated: str, control: str) -> dict[str, Any]:
    """treated - control per test query (R@1, mAP), with paired bootstrap intervals."""
    return {key: intervals.paired_difference(scored[treated][1][key], scored[control][1][key],
                                             seed=BOOTSTRAP_SEED) for key in METRICS}


def _effects(label: str, block: dict[str, Any]) -> str:
    parts = [f"{key} {_interval(d['effect'], d['ci95'], signed=True)}"
             + ("" if d["significant"] else " (the interval includes 0)")
             for key, d in block.items()]
    return f"{label}: " + "; ".join(parts)


def extend_section(block: dict[str, Any]) -> str:
    """The report's markdown section for metrics.json's ``extend`` block."""
    ablated = any(name in block["audio_to_image"] for name in VARIANTS if name != "extend")
    intro = INTRO.format(ablations=ABLATIONS_NOTE if ablated else
                         " (its two ablations: cmcr demo --extend-ablations)")
    lines = ["## Extend mode (Ex-MCR) vs C-MCR", "", intro, "", "| method | R@1 | mAP |",
             "|---|---|---|"]
    for name, values in block["audio_to_image"].items():
        cells = [_interval(values[key], values["ci95"][key]) for key in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Paired over the same queries (95% paired bootstrap interval):", "",
              "- " + _effects("extend - C-MCR", block["extend_minus_cmcr"])]
    lines += ["- " + _effects(f"extend - {name}", effects)
              for name, effects in block.get("extend_minus_ablation", {}).items()]
    lines += ["", RETENTION, "", RETENTION_HEADER, "|---|---|---|---|"]
    for name, row in block["retention"].items():
        cells = [f"{row[key]:.1f}" if key in row else "-"
                 for key in ("image_text", "audio_text_clap", "audio_text_clip")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    kept = block["base_max_abs_difference"]
    lines += ["", f"Extend mode keeps CLIP's rows: largest difference {kept:.1e}."]
    return "\n".join(lines)
