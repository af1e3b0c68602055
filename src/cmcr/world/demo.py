"""``cmcr demo``: the whole C-MCR story in the built-in world, offline.

1. generate the world; 2. embed it with the two toy spaces (trained on disjoint data);
3. connect them with texts plus unpaired image and audio memories only; 4. judge the emergent
audio-image pair on held-out scenes against baselines, ablations and a paired upper bound.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from cmcr.config import ConnectConfig, MethodConfig
from cmcr.pipeline import connect
from cmcr.errors import CmcrError
from cmcr.eval import baselines, intervals, metrics
from cmcr.eval.tasks import heatmaps
from cmcr.method.model import ConnectedModel
from cmcr.recipes import RECIPE_ADDITIONS, RECIPES
from cmcr.runtime import environment_record, run_record, write_json
from cmcr.spaces import load_space
from cmcr.spaces.clip import PATCH_MODES
from cmcr.runtime.threads import cores_note
from cmcr.world.concepts import CONCEPTS
from cmcr.world.compare_extend import compare_extend  # Ex-MCR's extend mode against C-MCR
from cmcr.world.generate import (WorldManifest, WorldSizes, generate_world, load_world,
                                 prune_media)
from cmcr.spaces.geometry import REAL_CLIP, space_geometry
from cmcr.world.regime import same_meaning_partners
from cmcr.world.stages import (AUDIO_PROMPT, IMAGE_PROMPT, FrozenEmbeddings, embed_world,
                               prompt_embeddings, records_field, zero_shot_top1)
from cmcr.world.toy_spaces import packaged_space_dir

# splits no stage reads after they are embedded (the rest are served, drawn or re-read)
EMBEDDED_ONLY = ("image_memory", "audio_memory", "paired_train")
ABLATIONS = {"no_noise": {"use_noise": False}, "no_memory": {"use_memory": False},
             "no_pseudo_inter": {"use_pseudo_inter": False}, "no_intra": {"use_intra": False}}
# paper component -> the ablation that removes it; its effect is cmcr minus that ablation
COMPONENTS = {"noise": "no_noise", "memory": "no_memory", "pseudo_inter": "no_pseudo_inter",
              "intra": "no_intra"}
DIRECTIONS = ("audio_to_image", "image_to_audio")
PLUS = "cmcr+"  # the recipe that beat the paper's on held-out world seeds (cmcr.recipes)
BOOTSTRAP_SEED = 0  # one fixed set of query resamples, shared by every method (paired)


@dataclass
class DemoSettings:
    """What the demo runs. The method keeps the paper's sigma^2 (0.004), tau (0.01) and lambda
    (0.1); the default shrinks the head, the batch and the epochs to fit a few CPU minutes, and
    :func:`paper_settings` restores them (the paper's 512-1024-512 head, batch 4096, 36 epochs)."""

    seed: int = 0
    sizes: WorldSizes = field(default_factory=WorldSizes)
    epochs: int = 12
    batch_size: int = 256
    temperature: float = 0.01  # the paper's InfoNCE temperature
    projector: dict[str, Any] = field(default_factory=lambda: {"hidden": 512, "out_dim": 256,
                                                               "layers": 2})
    spaces_dir: str | None = None  # toy spaces; default: the weights shipped in the package
    workers: int = 0
    ablations: bool = True  # each paper component's ablation and the extend-mode comparison
    extend_ablations: bool = False  # also extend mode's two ablations (minutes more)
    paper: bool = False  # the paper's head, batch and epochs (set by paper_settings)


PAPER_TRAINING = {"epochs": 36, "batch_size": 4096,
                  "projector": {"hidden": 1024, "out_dim": 512, "layers": 2}}
PAPER_TEXT_FACTOR = 4  # --paper connects through 4x the texts: 8 batches of 4096 an epoch


def paper_settings(settings: DemoSettings) -> DemoSettings:
    """``cmcr demo --paper``: the paper's training exactly (tau 0.01, batch 4096, 36 epochs,
    the 512-1024-512 head, sigma^2 0.004, lambda 0.1) through 4x the default's texts; the
    ablations and the extend comparison are left to the default demo, which runs them in minutes."""
    sizes = replace(settings.sizes, connect_texts=settings.sizes.connect_texts * PAPER_TEXT_FACTOR)
    return replace(settings, sizes=sizes, epochs=PAPER_TRAINING["epochs"],
                   batch_size=PAPER_TRAINING["batch_size"],
                   projector=dict(PAPER_TRAINING["projector"]), ablations=False, paper=True)


STAGES = {"world": "generate the world (or reuse it)",
          "embed": "embed it with the toy CLIP and the toy CLAP",
          "connect": "connect: C-MCR, its ablations and the paired upper bound",
          "evaluate": "evaluate: audio <-> image retrieval, retention, localisation, counterfactual",
          "figures": "draw the figures",
          "index": "index the test images and clips for 'cmcr serve'"}


@contextmanager
def _timed(timings: dict[str, float], name: str, progress: bool = False) -> Iterator[None]:
    """Record the seconds the ``with`` block takes as ``timings[name]``; with ``progress``, say
    which stage starts (its bars follow, each named after its method or store)."""
    if progress:
        print(f"[{len(timings) + 1}/{len(STAGES)}] {STAGES[name]} ({cores_note()})",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def demo_sizes(sizes: WorldSizes) -> WorldSizes:
    """The splits the demo reads: not the toy spaces' own training pairs (``cmcr world
    train-spaces`` generates those), which would be a third of the world's disk."""
    return replace(sizes, clip_pairs=0, clap_pairs=0)


def prepare_world(out_dir: Path, settings: DemoSettings, progress: bool) -> WorldManifest:
    """Generate the world, or reuse the one already in ``out_dir/world`` for the same settings."""
    world_dir = out_dir / "world"
    sizes = demo_sizes(settings.sizes)
    if (world_dir / "world.json").exists():
        try:
            world = load_world(world_dir)
        except CmcrError:  # another cmcr version's world, or damaged: make it anew
            world = None
        if world and world.seed == settings.seed and demo_sizes(world.sizes) == sizes:
            return world
    return generate_world(world_dir, seed=settings.seed, sizes=sizes, progress=progress)


def load_toy_spaces(settings: DemoSettings) -> dict[str, Any]:
    root = Path(settings.spaces_dir) if settings.spaces_dir else None
    return {kind: load_space(f"{kind}:{(root / f'toy-{kind}') if root else packaged_space_dir(kind)}",
                             device="cpu")
            for kind in ("clip", "clap")}


def _connect_config(stores: dict[str, Path], settings: DemoSettings,
                    method: dict[str, Any]) -> ConnectConfig:
    return ConnectConfig.from_dict({
        "shared_modality": "text",
        "spaces": {
            "clip": {"queries": str(stores["clip_text"]), "memory": str(stores["clip_image_memory"]),
                     "memory_modality": "image"},
            "clap": {"queries": str(stores["clap_text"]), "memory": str(stores["clap_audio_memory"]),
                     "memory_modality": "audio"},
        },
        "train": {"epochs": settings.epochs, "batch_size": settings.batch_size, "seed": settings.seed},
        "method": {"temperature": settings.temperature, **method},
        "projector": settings.projector,
    })


def recipe_variants(settings: DemoSettings) -> dict[str, dict[str, Any]]:
    """method overrides of each recipe model the demo trains: ``cmcr+`` when the recipe holds
    anything, and (with ablations) ``cmcr+_no_ADDITION`` without each of its additions."""
    plus = RECIPES.get(PLUS, {})
    if not plus:
        return {}
    variants = {PLUS: dict(plus)}
    if settings.ablations:
        variants |= {f"{PLUS}_no_{name}": {**plus, **removal}
                     for name, removal in RECIPE_ADDITIONS.get(PLUS, {}).items()}
    return variants


def train_connections(frozen: FrozenEmbeddings, out_dir: Path, settings: DemoSettings,
                      progress: bool) -> dict[str, ConnectedModel]:
    """C-MCR, its ablations and the ``cmcr+`` recipe (with its own ablations), each through
    ``cmcr.connect`` (pseudo pairs cached once)."""
    variants = {"cmcr": {}, **(ABLATIONS if settings.ablations else {}),
                **recipe_variants(settings)}
    return {name: connect(_connect_config(frozen.stores, settings, method), out_dir / "models" / name,
                          device="cpu", cache_dir=out_dir / "cache", progress=progress)
            for name, method in variants.items()}


def train_upper_bound(frozen: FrozenEmbeddings, world: WorldManifest, out_dir: Path,
                      settings: DemoSettings, progress: bool
                      ) -> tuple[dict[str, ConnectedModel], dict[str, Any]]:
    """The paired upper bound (:mod:`cmcr.world.bound`: true pairs, early-stopped on held-out
    pairs, the best of the paper's objective and no noise) and its record."""
    from cmcr.world.bound import train_paired_upper_bound

    model, record = train_paired_upper_bound(frozen, world, out_dir, settings, _connect_config,
                                             progress)
    return {"paired_upper_bound": model}, record


# -- evaluation ----------------------------------------------------------------------------------
def concept_positives(audio_concepts: list[str], image_concepts: list[str]) -> np.ndarray:
    """Image j is a positive for audio i when j's sounding concept is i's concept."""
    return np.array(audio_concepts)[:, None] == np.array(image_concepts)[None, :]


def both_directions(similarity: np.ndarray, positives: np.ndarray) -> dict[str, Any]:
    """audio->image and image->audio metrics of one (test audio, test images) similarity."""
    return {"audio_to_image": metrics.retrieval_metrics(similarity, positives),
            "image_to_audio": metrics.retrieval_metrics(similarity.T, positives.T)}


def chance_both_directions(positives: np.ndarray) -> dict[str, Any]:
    def mean_chance(matrix: np.ndarray) -> dict[str, float]:
        rows = [metrics.chance_retrieval_metrics(matrix.shape[1], int(count))
                for count in matrix.sum(axis=1)]
        return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    return {"audio_to_image": mean_chance(positives), "image_to_audio": mean_chance(positives.T)}


def project(model: ConnectedModel, space: str, rows: np.ndarray, modality: str) -> np.ndarray:
    return model.project(space, rows, modality).numpy()


def method_similarities(models: dict[str, ConnectedModel], frozen: FrozenEmbeddings
                        ) -> dict[str, np.ndarray]:
    """(test audio, test images) similarity of every ranking method: the connected models, the
    text pivot and the linear map."""
    image, audio = frozen["test_image"], frozen["test_audio"]
    similarities = {name: project(m, "clap", audio, "audio") @ project(m, "clip", image, "image").T
                    for name, m in models.items()}
    clip_text, clap_text = frozen["clip_text"], frozen["clap_text"]
    similarities["text_pivot"] = baselines.text_pivot(audio, clap_text, clip_text) @ image.T
    linear = baselines.fit_linear_map(clap_text, clip_text)
    similarities["linear_map"] = baselines.apply_linear_map(linear, audio) @ image.T
    return similarities


def per_query_scores(similarity: np.ndarray, positives: np.ndarray
                     ) -> dict[str, dict[str, np.ndarray]]:
    """direction -> metric -> (queries,) scores of one audio x image similarity matrix."""
    return {"audio_to_image": intervals.per_query_retrieval(similarity, positives),
            "image_to_audio": intervals.per_query_retrieval(similarity.T, positives.T)}


def chance_per_query(positives: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Each query's expected chance score (it depends on its number of positives)."""
    def expected(matrix: np.ndarray) -> dict[str, np.ndarray]:
        rows = [metrics.chance_retrieval_metrics(matrix.shape[1], int(count))
                for count in matrix.sum(axis=1)]
        return {key: np.array([row[key] for row in rows]) for key in rows[0]}
    return {"audio_to_image": expected(positives), "image_to_audio": expected(positives.T)}


def with_intervals(point: dict[str, float], per_query: dict[str, np.ndarray]) -> dict[str, Any]:
    """Point metrics plus ``ci95``: metric -> [low, high], a 95% percentile bootstrap over the
    test queries (the same resamples for every method)."""
    return {**point, "ci95": {key: intervals.bootstrap_interval(per_query[key], seed=BOOTSTRAP_SEED)
                              for key in point}}


def retrieval_with_intervals(models: dict[str, ConnectedModel], frozen: FrozenEmbeddings,
                             positives: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json's ``methods`` (each metric with its interval) and every method's per-query
    scores (method -> direction -> metric -> (queries,)), for paired comparisons."""
    similarities = method_similarities(models, frozen)
    scores = {name: per_query_scores(s, positives) for name, s in similarities.items()}
    scores["chance"] = chance_per_query(positives)
    points = {name: both_directions(s, positives) for name, s in similarities.items()}
    points["chance"] = chance_both_directions(positives)
    results = {name: {d: with_intervals(points[name][d], scores[name][d]) for d in DIRECTIONS}
               for name in points}
    return results, scores


def emergent_retrieval(models: dict[str, ConnectedModel], frozen: FrozenEmbeddings,
                       positives: np.ndarray) -> dict[str, Any]:
    """audio<->image on the held-out pairs for every method (metrics.json's ``methods``)."""
    return retrieval_with_intervals(models, frozen, positives)[0]


def paired_effect(scores: dict[str, Any], treated: str, control: str) -> dict[str, Any]:
    """treated - control per test query in both directions, with paired bootstrap intervals."""
    return {direction: {key: intervals.paired_difference(values, scores[control][direction][key],
                                                         seed=BOOTSTRAP_SEED)
                        for key, values in scores[treated][direction].items()}
            for direction in DIRECTIONS}


def component_effects(scores: dict[str, Any], method: str = "cmcr",
                      components: dict[str, str] | None = None) -> dict[str, Any]:
    """Each component's effect: ``method`` minus the ablation without it, per test query, with
    a paired bootstrap interval and whether that interval excludes zero (metrics.json's
    ``components``; for ``cmcr+``, ``recipe_components``)."""
    components = COMPONENTS if components is None else components
    return {component: {"ablation": ablation, **paired_effect(scores, method, ablation)}
            for component, ablation in components.items()
            if method in scores and ablation in scores}


def recipe_effects(scores: dict[str, Any]) -> dict[str, Any]:
    """``cmcr+`` against C-MCR and each of its additions' effect (metrics.json's ``recipe``)."""
    if PLUS not in scores:
        return {}
    additions = {name: f"{PLUS}_no_{name}" for name in RECIPE_ADDITIONS.get(PLUS, {})}
    return {"name": PLUS, "method": dict(RECIPES[PLUS]),
            "minus_cmcr": paired_effect(scores, PLUS, "cmcr"),
            "components": component_effects(scores, PLUS, additions)}


def regime(frozen: FrozenEmbeddings, noise_var: float) -> dict[str, Any]:
    """Each toy space's geometry (:data:`cmcr.spaces.geometry.GEOMETRY_KEYS`) on the paired split's
    rows (image with its look caption, clip with its sound caption), with real CLIP's beside
    it as ``reference``; ``noise_cosine`` is what sigma^2 = ``noise_var`` leaves of a row."""
    return {space: {**space_geometry(frozen[media], frozen[captions], noise_var),
                    "noise_var": noise_var, "rows": len(frozen[captions]),
                    "stores": [f"emb/{media}", f"emb/{captions}"],  # cmcr inspect OUT/emb/...
                    "reference": dict(REAL_CLIP)}
            for space, media, captions in (("clip", "paired_image", "paired_look_text"),
                                           ("clap", "paired_audio", "paired_sound_text"))}


def training_record(settings: DemoSettings) -> dict[str, Any]:
    """The connection's training as metrics.json records it (the method keys at their paper
    values, which the demo does not change)."""
    method = MethodConfig()
    return {"paper": settings.paper, "epochs": settings.epochs, "batch_size": settings.batch_size,
            "projector": dict(settings.projector), "temperature": settings.temperature,
            "noise_var": method.noise_var, "intra_weight": method.intra_weight}


def false_negatives(world: WorldManifest, batch_size: int) -> dict[str, Any]:
    """How many texts of the same concepts share a connection batch with each text (at the
    demo's batch and at the paper's 4096): InfoNCE treats them as negatives."""
    concept_sets = records_field(world, "connect_texts", "concepts")
    return {"batch_size": batch_size,
            "same_meaning_per_text": same_meaning_partners(concept_sets, batch_size),
            "same_meaning_per_text_at_4096": same_meaning_partners(concept_sets, 4096)}


def retention(model: ConnectedModel, spaces: dict[str, Any], world: WorldManifest,
              frozen: FrozenEmbeddings) -> dict[str, Any]:
    """Zero-shot image->text and audio->text inside the joint space vs the original spaces."""
    names = [c.name for c in CONCEPTS]
    image_prompts = prompt_embeddings(spaces["clip"], names, IMAGE_PROMPT)
    audio_prompts = prompt_embeddings(spaces["clap"], names, AUDIO_PROMPT)
    image, audio = frozen["test_image"], frozen["test_audio"]
    in_image = records_field(world, "test_pairs", "image_concepts")
    in_audio = records_field(world, "test_pairs", "audio_concepts")
    return {
        "image_text_top1": {
            "original": zero_shot_top1(image, image_prompts, names, in_image),
            "joint": zero_shot_top1(project(model, "clip", image, "image"),
                                     project(model, "clip", image_prompts, "text"), names,
                                     in_image)},
        "audio_text_top1": {
            "original": zero_shot_top1(audio, audio_prompts, names, in_audio),
            "joint": zero_shot_top1(project(model, "clap", audio, "audio"),
                                     project(model, "clap", audio_prompts, "text"), names,
                                     in_audio)},
        "chance_top1": 100.0 / len(names),
    }


def localisation_maps(model: ConnectedModel, patches: torch.Tensor, audio: np.ndarray,
                      size: int) -> np.ndarray:
    """Heat maps (n, size, size): projected audio against projected CLIP patch tokens."""
    n, count, dim = patches.shape
    joint = project(model, "clip", patches.reshape(n * count, dim).numpy(), "image")
    return heatmaps(joint.reshape(n, count, -1), project(model, "clap", audio, "audio"), size=size)


def _box_map(box: list[int], size: int) -> np.ndarray:
    return metrics.boxes_to_map([[v / size for v in box]], (size, size))


def sounding_preferred(maps: np.ndarray, sounding: list[np.ndarray], silent: list[np.ndarray]
                       ) -> float:
    """Share (percent) of two-object scenes whose heat map is higher, on average, inside the
    sounding object's box than inside the silent one's (chance 50)."""
    wins = [(heat * s).sum() / s.sum() > (heat * q).sum() / q.sum()
            for heat, s, q in zip(maps, sounding, silent)]
    return float(100.0 * np.mean(wins))


def localisation_scores(maps: np.ndarray, sounding: list[np.ndarray], silent: list[np.ndarray]
                        ) -> dict[str, float]:
    return {**metrics.localization_metrics([metrics.consensus_iou(h, g)
                                            for h, g in zip(maps, sounding)]),
            "pointing": metrics.pointing_game(maps, np.stack(sounding)),
            "sounding_preferred": sounding_preferred(maps, sounding, silent)}


def localisation(models: dict[str, ConnectedModel], patches: dict[str, torch.Tensor],
                 world: WorldManifest, frozen: FrozenEmbeddings
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Heat maps of the sounding object in two-object scenes: cIoU@0.5 / mean cIoU / AUC
    (EZ-VSL), pointing game, and how often the sounding object beats the silent one.

    ``patches`` maps a patch mode ("tokens", "values") to CLIP patch features; results for
    value patches are named ``METHOD_value_patches``.
    """
    size = world.sizes.image_size
    sounding = [_box_map(r["box"], size) for r in world.localisation]
    silent = [_box_map(r["boxes"][1 - r["sounding_index"]], size) for r in world.localisation]
    results, maps = {}, {}
    for name, model in models.items():
        for mode, features in patches.items():
            key = name if mode == "tokens" else f"{name}_{mode[:-1]}_patches"
            maps[key] = localisation_maps(model, features, frozen["localisation_audio"], size)
            results[key] = localisation_scores(maps[key], sounding, silent)
    centre = (size - 1) / 2
    prior = np.fromfunction(lambda y, x: -((y - centre) ** 2 + (x - centre) ** 2), (size, size))
    results["centre_prior"] = localisation_scores(np.stack([prior] * len(sounding)), sounding,
                                                  silent)
    return results, maps


def counterfactual(models: dict[str, ConnectedModel], world: WorldManifest,
                   frozen: FrozenEmbeddings) -> dict[str, Any]:
    """Does this sound belong to this image? AP, max-F1, cross-fitted accuracy per method."""
    labels = np.array(records_field(world, "counterfactual", "label"), dtype=bool)
    image, audio = frozen["counterfactual_image"], frozen["counterfactual_audio"]
    results = {}
    for name, model in models.items():
        scores = np.sum(project(model, "clip", image, "image") * project(model, "clap", audio, "audio"),
                        axis=1)
        results[name] = metrics.recognition_metrics(scores, labels)
    rate = 100.0 * labels.mean()
    results["chance"] = {"AP": rate, "max-F1": 200 * rate / (100 + rate),
                         "accuracy": max(rate, 100 - rate)}
    return results


def search_model_name(models: dict[str, ConnectedModel]) -> str:
    """The model ``cmcr serve OUT`` searches with: cmcr+ when the demo trained it, else C-MCR."""
    return PLUS if PLUS in models else "cmcr"


def build_search_index(out_dir: Path, frozen: FrozenEmbeddings, model_name: str,
                       progress: bool) -> Any:
    """The test images and clips in ``model_name``'s joint space, for ``cmcr serve OUT``."""
    from cmcr.serve.index import Index, StoreSource

    stores = [StoreSource(str(frozen.stores[name]), name=name) for name in ("test_image", "test_audio")]
    return Index.build(out_dir / "index", out_dir / "models" / model_name, stores, overwrite=True,
                       progress=progress)


def evaluate(models: dict[str, ConnectedModel], spaces: dict[str, Any], world: WorldManifest,
             frozen: FrozenEmbeddings, patches: dict[str, torch.Tensor], positives: np.ndarray
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every measurement of metrics.json but ``seed`` and ``seconds``; and the heat maps."""
    judged = {k: models[k] for k in ("cmcr", "paired_upper_bound")}
    local, maps = localisation(judged, patches, world, frozen)
    methods, scores = retrieval_with_intervals(models, frozen, positives)
    results = {
        "world": asdict(world.sizes),
        "test_pairs": len(world.test_pairs),
        "methods": methods,
        "components": component_effects(scores),
        "recipe": recipe_effects(scores),
        "regime": regime(frozen, MethodConfig().noise_var),
        "retention": retention(models["cmcr"], spaces, world, frozen),
        "localisation": local,
        "counterfactual": counterfactual(judged, world, frozen),
    }
    if PLUS in models:
        results["recipe"]["retention"] = retention(models[PLUS], spaces, world, frozen)
    for name in ("cmcr", PLUS):
        if name in methods and "paired_upper_bound" in methods:
            upper = methods["paired_upper_bound"]["audio_to_image"]["R@1"]
            results[f"{name}_to_upper_bound_R@1"] = (
                methods[name]["audio_to_image"]["R@1"] / upper if upper else None)
    return results, maps


# -- the whole run -------------------------------------------------------------------------------
def run_demo(out_dir: str | Path, settings: DemoSettings | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run every stage; write ``metrics.json``, ``report.md`` and figures in ``out_dir``."""
    from cmcr.world.report import write_figures, write_report

    settings = settings or DemoSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    timings: dict[str, float] = {}
    with _timed(timings, "world", progress):
        world = prepare_world(out_dir, settings, progress)
    spaces = load_toy_spaces(settings)
    with _timed(timings, "embed", progress):
        frozen = embed_world(world, spaces, out_dir / "emb", progress, settings.workers)
        prune_media(world, EMBEDDED_ONLY)  # regenerated, byte for byte, if ever re-embedded
        localisation_images = [str(world.path(p)) for p in records_field(world, "localisation", "image")]
        patches = {mode: spaces["clip"].embed_image_patches(localisation_images, mode=mode)
                   for mode in PATCH_MODES}
    with _timed(timings, "connect", progress):
        models = train_connections(frozen, out_dir, settings, progress)
        bound_models, bound = train_upper_bound(frozen, world, out_dir, settings, progress)
        models |= bound_models
    with _timed(timings, "evaluate", progress):
        positives = concept_positives(records_field(world, "test_pairs", "concept"),
                                      records_field(world, "test_pairs", "concept"))
        results, maps = evaluate(models, spaces, world, frozen, patches, positives)
        results = {"seed": settings.seed, "training": training_record(settings),
                   "environment": environment_record(), **results,
                   "upper_bound": bound,
                   "false_negatives": false_negatives(world, settings.batch_size)}
        if settings.ablations:
            results["extend"] = compare_extend(out_dir, settings, frozen, spaces, world,
                                               models["cmcr"], positives, progress)
    with _timed(timings, "figures", progress):
        write_figures(out_dir, world, frozen, models["cmcr"], maps, positives)
    with _timed(timings, "index", progress):
        build_search_index(out_dir, frozen, search_model_name(models), progress)
    results["seconds"] = timings
    write_json(out_dir / "metrics.json", results)
    write_report(out_dir, results)
    write_json(out_dir / "run.json", run_record(asdict(settings)))
    return results
