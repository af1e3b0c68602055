"""The demo's outputs for people: a terminal table, report.md and PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmcr.eval.figures import plot_heatmaps, pyplot
from cmcr.eval.tables import text_table as _table
from cmcr.study.explain import geometry_table
from cmcr.method.model import ConnectedModel
from cmcr.world.concepts import CONCEPTS, HAND_MADE
from cmcr.world.generate import WorldManifest
from cmcr.world.compare_extend import extend_section
from cmcr.world.stages import FrozenEmbeddings, records_field

METHOD_ORDER = ["cmcr", "cmcr+", "paired_upper_bound", "text_pivot", "linear_map", "no_noise",
                "no_memory", "no_pseudo_inter", "no_intra", "chance"]
HAND_MADE_NAMES = [concept.name for concept in CONCEPTS[:HAND_MADE]]
COLUMNS = ["R@1", "R@5", "R@10", "mAP"]
COMPONENT_NAMES = {"noise": "noise", "memory": "memory retrieval",
                   "pseudo_inter": "pseudo-pair InfoNCE", "intra": "intra-space alignment"}
# Published reference (a citation, not a measurement of ours): Liang et al., NeurIPS 2022, "Mind
# the Gap". The authors' code (Weixin-Liang/Modality-Gap, Table_1_Implications_CLIP_Zero_Shot/
# shifting/shift_features.ipynb) measures the gap as ||mean(image) - mean(text)|| and marks 0.8262
# as its reference line; the paper's own text was not reachable here to confirm the figure for
# ViT-B/32 on MSCOCO, and no matched-pair cosine was found in it.


def ordered_methods(results: dict[str, Any]) -> list[str]:
    """The known methods in their usual order, then any other (e.g. added by a hook)."""
    known = [m for m in METHOD_ORDER if m in results["methods"]]
    return known + [m for m in results["methods"] if m not in METHOD_ORDER]


def _with_interval(value: float, interval: list[float] | None, signed: bool = False) -> str:
    point = f"{value:+.1f}" if signed else f"{value:.1f}"
    return f"{point} [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else point


def retrieval_table(results: dict[str, Any], direction: str, markdown: bool = False) -> str:
    """Methods x R@1/R@5/R@10/mAP for one direction, each with its 95% interval when known."""
    rows = []
    for method in ordered_methods(results):
        values = results["methods"][method][direction]
        ci = values.get("ci95", {})
        rows.append([method] + [_with_interval(values[c], ci.get(c)) for c in COLUMNS])
    return _table(["method"] + COLUMNS, rows, markdown)


def significant_components(results: dict[str, Any], direction: str = "audio_to_image",
                           metric: str = "R@1") -> tuple[list[str], list[str]]:
    """(components whose effect interval excludes zero, those whose interval holds it)."""
    effects = results.get("components", {})
    yes = [c for c, e in effects.items() if e[direction][metric]["significant"]]
    return yes, [c for c in effects if c not in yes]


def _effect_cells(effects: dict[str, Any]) -> list[str]:
    """One paired effect per metric column: points with its interval, ``*`` when it excludes 0."""
    return [_with_interval(effects[c]["effect"], effects[c]["ci95"], True)
            + ("*" if effects[c]["significant"] else "") for c in COLUMNS]


def components_table(results: dict[str, Any], direction: str = "audio_to_image",
                     markdown: bool = False) -> str:
    """Each paper component's effect (C-MCR minus the ablation without it) with its paired
    95% bootstrap interval; ``*`` marks an interval that excludes zero."""
    rows = [[COMPONENT_NAMES.get(component, component), effect["ablation"],
             *_effect_cells(effect[direction])]
            for component, effect in results["components"].items()]
    return _table(["component", "removed in"] + COLUMNS, rows, markdown)


def components_verdict(results: dict[str, Any]) -> str:
    """One sentence: which components change audio->image R@1 significantly, which do not."""
    yes, no = significant_components(results)
    effects = results["components"]
    describe = lambda names: ", ".join(  # noqa: E731
        f"{COMPONENT_NAMES.get(c, c)} ({effects[c]['audio_to_image']['R@1']['effect']:+.1f})"
        for c in names) or "none"
    return (f"Significant at 95% on audio->image R@1 (paired bootstrap interval excludes 0): "
            f"{describe(yes)}. Not significant: {describe(no)}.")


def recipe_text(results: dict[str, Any], markdown: bool = False) -> list[str]:
    """The cmcr+ recipe: its settings, its paired gain over C-MCR and each addition's effect."""
    recipe = results.get("recipe")
    if not recipe:
        return []
    settings = ", ".join(f"{key}={value}" for key, value in recipe["method"].items())
    gain = _effect_cells(recipe["minus_cmcr"]["audio_to_image"])
    parts = [f"recipe {recipe['name']} ({settings}) minus cmcr, audio -> image (paired 95% "
             f"interval; * excludes 0)", _table(["", *COLUMNS], [["gain", *gain]], markdown), ""]
    if recipe.get("components"):
        parts += [f"what each addition of {recipe['name']} adds (its ablation without it)",
                  components_table({"components": recipe["components"]}, "audio_to_image",
                                   markdown), ""]
    return parts


def regime_table(results: dict[str, Any], markdown: bool = False) -> str:
    """Each toy space's geometry beside real CLIP's (:func:`cmcr.spaces.geometry.geometry_table`)."""
    regime = results["regime"]
    columns = {f"toy {space.upper()}": values for space, values in regime.items()}
    reference = next(iter(regime.values())).get("reference")
    if reference:
        columns["real CLIP ViT-B/16"] = reference
    return geometry_table(columns, markdown)


def _metric_rows(block: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    keys = list(next(iter(block.values())))
    return ["method"] + keys, [[name] + [f"{values[k]:.1f}" for k in keys]
                               for name, values in block.items()]


def evidence_text(results: dict[str, Any], markdown: bool = False) -> list[str]:
    """The paper components' effects and the toy spaces' regime, when measured."""
    parts = []
    if results.get("components"):
        parts += ["what each paper component adds to audio -> image (C-MCR minus the ablation "
                  "without it, points; [95% paired bootstrap interval]; * excludes 0)",
                  components_table(results, "audio_to_image", markdown), "",
                  components_verdict(results), ""]
    if results.get("regime"):
        parts += ["geometry of the toy spaces (the paired split: image with its look caption, "
                  "clip with its sound caption) beside real CLIP ViT-B/16 (500 COCO pairs, "
                  "Liang et al. 2022); `cmcr inspect` measures your own stores the same way",
                  regime_table(results, markdown), ""]
    return parts


def training_lines(results: dict[str, Any]) -> list[str]:
    """How the connections were trained, and the false negatives per batch, when recorded."""
    training, fakes = results.get("training"), results.get("false_negatives")
    if not training:
        return []
    head = training["projector"]
    lines = [f"training ({'the paper' if training['paper'] else 'default demo'}): head "
             f"d-{head.get('hidden')}-{head.get('out_dim')} ({head.get('layers')} layers), batch "
             f"{training['batch_size']}, {training['epochs']} epochs, tau {training['temperature']:g}, "
             f"sigma^2 {training['noise_var']:g}, lambda {training['intra_weight']:g}"]
    if fakes:
        lines.append(f"same-concept texts sharing a batch with each text: "
                     f"{fakes['same_meaning_per_text']:.2f} at batch {fakes['batch_size']}, "
                     f"{fakes['same_meaning_per_text_at_4096']:.2f} at 4096")
    return lines + [""]


def retention_table_rows(results: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """Zero-shot top-1 rows (original space, C-MCR's joint space, cmcr+'s when trained)."""
    retention = results["retention"]
    plus = (results.get("recipe") or {}).get("retention")
    rows = []
    for task, key in (("image -> text (CLIP)", "image_text_top1"),
                      ("audio -> text (CLAP)", "audio_text_top1")):
        row = [task, f"{retention[key]['original']:.1f}", f"{retention[key]['joint']:.1f}"]
        rows.append(row + ([f"{plus[key]['joint']:.1f}"] if plus else []))
    return rows, ["task", "original", "cmcr"] + (["cmcr+"] if plus else [])


def summary_text(results: dict[str, Any], markdown: bool = False) -> str:
    """Everything the demo measured, as tables."""
    retention = results["retention"]
    retention_rows, retention_header = retention_table_rows(results)
    parts = [*training_lines(results),
        f"audio -> image retrieval, {results['test_pairs']} held-out pairs never seen in "
        "training (percent; positives: images of the sound's concept; [95% bootstrap interval "
        "over the test queries])",
        retrieval_table(results, "audio_to_image", markdown), "",
        "image -> audio retrieval", retrieval_table(results, "image_to_audio", markdown), "",
        *evidence_text(results, markdown),
        *recipe_text(results, markdown),
        "retention: zero-shot top-1 (percent) in the original space vs the joint space "
        f"(chance {retention['chance_top1']:.1f})",
        _table(retention_header, retention_rows, markdown), "",
        "sound-source localisation (percent)", _table(*_metric_rows(results["localisation"]),
                                                      markdown), "",
        "counterfactual recognition (percent)", _table(*_metric_rows(results["counterfactual"]),
                                                       markdown),
    ]
    bound = results.get("upper_bound") or {}
    trained = (f"true pairs, {bound['objective']} objective, early-stopped at epoch "
               f"{bound['epoch']} of {bound['max_epochs']} on {bound['held_out_pairs']} held-out "
               "pairs" if bound else "true pairs")
    for name, label in (("cmcr", "C-MCR"), ("cmcr+", "cmcr+")):
        ratio = results.get(f"{name}_to_upper_bound_R@1")
        if ratio is not None:
            parts += ["", f"{label} reaches {100 * ratio:.0f}% of the audio->image R@1 of "
                          f"paired_upper_bound (the same projectors on {trained})."]
    return "\n".join(parts)


def write_report(out_dir: Path, results: dict[str, Any]) -> Path:
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    text = "\n".join([
        f"# cmcr demo — seed {results['seed']}", "",
        "Two toy spaces trained on disjoint data (a CLIPModel on image/look-caption pairs, a "
        "ClapModel on audio/sound-caption pairs), connected by C-MCR through texts plus unpaired "
        "image and audio memories, judged on audio-image pairs no stage ever saw.", "",
        summary_text(results, markdown=True), "",
        *([extend_section(results["extend"]), ""] if "extend" in results else []),
        "## Figures", "",
        "![retrieval](retrieval_grid.png)", "", "![similarity](similarity_matrix.png)", "",
        "![localisation](localisation.png)", "",
        "![localisation, value patches](localisation_values.png)", "", "![joint space](joint_space.png)", "",
        f"Time: {seconds}.", ""])
    path = out_dir / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


# -- several world seeds --------------------------------------------------------------------------
def _mean_std(summary: dict[str, Any], signed: bool = False) -> str:
    mean = f"{summary['mean']:+.1f}" if signed else f"{summary['mean']:.1f}"
    return f"{mean} ± {summary['std']:.1f}"


def seeds_retrieval_table(summary: dict[str, Any], direction: str, markdown: bool = False) -> str:
    """Methods x metrics as mean ± standard deviation over the world seeds."""
    rows = [[m] + [_mean_std(summary["methods"][m][direction][c]) for c in COLUMNS]
            for m in ordered_methods(summary)]
    return _table(["method"] + COLUMNS, rows, markdown)


def seeds_r1_table(summary: dict[str, Any], markdown: bool = False) -> str:
    """audio->image R@1 of every method on every seed."""
    methods = ordered_methods(summary)
    rows = [[str(seed)] + [f"{summary['methods'][m]['audio_to_image']['R@1']['values'][i]:.1f}"
                           for m in methods]
            for i, seed in enumerate(summary["seeds"])]
    return _table(["seed"] + methods, rows, markdown)


def seeds_components_table(summary: dict[str, Any], markdown: bool = False) -> str:
    """Each component's audio->image effect over seeds: mean ± std [95% t-interval], and on how
    many seeds its own paired interval lay above (+) or below (-) zero."""
    rows = []
    for component, effect in summary["components"].items():
        cells = []
        for c in COLUMNS:
            e = effect["audio_to_image"][c]
            cells.append(f"{_mean_std(e, True)} [{e['ci95'][0]:+.1f}, {e['ci95'][1]:+.1f}] "
                         f"({e['seeds_significant_positive']}+/{e['seeds_significant_negative']}-)")
        rows.append([COMPONENT_NAMES.get(component, component), effect["ablation"]] + cells)
    return _table(["component", "removed in"] + COLUMNS, rows, markdown)


def seeds_verdict(summary: dict[str, Any]) -> str:
    """Which components change audio->image R@1 significantly over the seeds (t-interval)."""
    effects = {c: e["audio_to_image"]["R@1"] for c, e in summary["components"].items()}
    if len(summary["seeds"]) < 3:
        return "Too few seeds (fewer than 3) to judge significance over seeds."
    named = lambda cs: ", ".join(  # noqa: E731
        f"{COMPONENT_NAMES.get(c, c)} ({effects[c]['mean']:+.1f})" for c in cs) or "none"
    yes = [c for c, e in effects.items() if e["ci95"][0] > 0 or e["ci95"][1] < 0]
    return (f"Over {len(summary['seeds'])} world seeds, significant at 95% on audio->image R@1 "
            f"(t-interval over seeds excludes 0): {named(yes)}. Not significant: "
            f"{named([c for c in effects if c not in yes])}.")


def seeds_summary_text(summary: dict[str, Any], markdown: bool = False) -> str:
    """The multi-seed study as tables."""
    ratio = summary["cmcr_to_upper_bound_R@1"]
    parts = [f"audio -> image retrieval over world seeds {summary['seeds']} (percent, mean ± "
             f"standard deviation over seeds; {summary['test_pairs'][0]} test pairs per seed)",
             seeds_retrieval_table(summary, "audio_to_image", markdown), "",
             "image -> audio retrieval", seeds_retrieval_table(summary, "image_to_audio", markdown),
             "", "audio -> image R@1 per seed", seeds_r1_table(summary, markdown), ""]
    if summary["components"]:
        parts += ["what each paper component adds to audio -> image over seeds (points: mean ± "
                  "std [95% t-interval over seeds] (seeds whose own paired interval is above / "
                  "below 0))", seeds_components_table(summary, markdown), "",
                  seeds_verdict(summary), ""]
    parts += seeds_recipe_text(summary, markdown)
    parts.append(f"C-MCR reaches {100 * ratio['mean']:.0f}% ± {100 * ratio['std']:.0f}% of the "
                 "paired upper bound's audio->image R@1.")
    plus = summary.get("cmcr+_to_upper_bound_R@1")
    if plus:
        parts.append(f"cmcr+ reaches {100 * plus['mean']:.0f}% ± {100 * plus['std']:.0f}%.")
    return "\n".join(parts)


def seeds_recipe_text(summary: dict[str, Any], markdown: bool = False) -> list[str]:
    """cmcr+ minus C-MCR, and each of its additions, over seeds (same table as the components)."""
    recipe = summary.get("recipe")
    if not recipe:
        return []
    rows = {"recipe": {"ablation": "cmcr", **recipe["minus_cmcr"]}, **recipe["components"]}
    return [f"{recipe['name']} minus cmcr (first row), and what each of its additions adds, "
            "over seeds (points: mean ± std [95% t-interval] (seeds significant + / -))",
            seeds_components_table({"components": rows}, markdown), ""]


def write_seeds_report(out_dir: Path, summary: dict[str, Any]) -> Path:
    """``report.md`` of a multi-seed study (each seed's own report is in ``seed-N/``)."""
    links = ", ".join(f"[seed {s}](seed-{s}/report.md)" for s in summary["seeds"])
    text = "\n".join([f"# cmcr demo — world seeds {summary['seeds']}", "",
                      seeds_summary_text(summary, markdown=True), "", f"Each seed: {links}.", ""])
    path = out_dir / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


# -- figures ---------------------------------------------------------------------------------------
def write_figures(out_dir: Path, world: WorldManifest, frozen: FrozenEmbeddings,
                  model: ConnectedModel, maps: dict[str, np.ndarray], positives: np.ndarray
                  ) -> None:
    image = model.project("clip", frozen["test_image"], "image").numpy()
    audio = model.project("clap", frozen["test_audio"], "audio").numpy()
    similarity = audio @ image.T
    concepts = records_field(world, "test_pairs", "concept")
    retrieval_grid(world, similarity, positives, out_dir / "retrieval_grid.png")
    named = np.flatnonzero(np.isin(concepts, HAND_MADE_NAMES))  # 200 concepts: too many labels
    similarity_matrix(similarity[np.ix_(named, named)], [concepts[i] for i in named],
                      out_dir / "similarity_matrix.png")
    localisation_figure(world, maps["cmcr"], out_dir / "localisation.png",
                        "C-MCR: where is the sound? audio vs CLIP patch tokens in the joint space")
    localisation_figure(world, maps["cmcr_value_patches"], out_dir / "localisation_values.png",
                        "C-MCR: where is the sound? audio vs CLIP value patches (MaskCLIP) "
                        "in the joint space")
    joint_space_map(image, audio, model.project("clip", frozen["clip_text"][:300], "text").numpy(),
                    out_dir / "joint_space.png")


def retrieval_grid(world: WorldManifest, similarity: np.ndarray, positives: np.ndarray,
                   path: Path, queries: int = 6, top: int = 5) -> Path:
    """Audio queries (spectrograms) and their top images, green when of the sound's concept."""
    import soundfile

    from PIL import Image

    plt = pyplot()
    records = world.test_pairs
    figure, axes = plt.subplots(queries, top + 1, figsize=(1.6 * (top + 1), 1.6 * queries))
    for row, query in enumerate(np.linspace(0, len(records) - 1, queries).astype(int)):
        samples, rate = soundfile.read(world.path(records[query]["audio"]))
        axes[row][0].specgram(samples, Fs=rate, NFFT=256, noverlap=128, cmap="magma")
        axes[row][0].set_title(f"sound: {records[query]['concept']}", fontsize=7)
        axes[row][0].set_ylabel(f"0-{rate / 2000:g} kHz", fontsize=6)
        axes[row][0].set_xlabel(f"{len(samples) / rate:.1f} s", fontsize=6)
        for column, index in enumerate(np.argsort(-similarity[query])[:top], start=1):
            axis = axes[row][column]
            axis.imshow(Image.open(world.path(records[index]["image"])))
            colour = "green" if positives[query, index] else "red"
            axis.set_title(records[index]["concept"], fontsize=7, color=colour)
            for spine in axis.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("C-MCR: audio queries and their top images (never paired in training)",
                    fontsize=9)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.text(0.5, 0.01, "left: the query's spectrogram and its concept. Green border: an image "
                "of the sound's concept (a hit); red: any other image. Titles: the image's concept.",
                ha="center", fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # nothing clipped
    plt.close(figure)
    return path


def concept_similarity(similarity: np.ndarray, concepts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Mean audio x image similarity for each (sound concept, image concept) pair."""
    names = sorted(set(concepts))
    index = np.array([names.index(c) for c in concepts])
    one_hot = np.eye(len(names))[index]  # (items, concepts)
    counts = one_hot.sum(axis=0)
    return (one_hot.T @ similarity @ one_hot) / np.outer(counts, counts), names


def similarity_matrix(similarity: np.ndarray, concepts: list[str], path: Path) -> Path:
    """Left: mean similarity per (sound concept, image concept), a bright diagonal is retrieval
    succeeding; right: every audio x image pair sorted by concept, each row centred."""
    plt = pyplot()
    per_concept, names = concept_similarity(similarity, concepts)
    order = np.argsort(np.array(concepts), kind="stable")
    pairs = similarity[np.ix_(order, order)]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6))
    shown = left.imshow(per_concept, cmap="viridis")
    left.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    left.set_yticks(range(len(names)), names, fontsize=6)
    left.set_xlabel("image concept")
    left.set_ylabel("sound concept")
    left.set_title("mean joint-space cosine per concept pair\n(the 32 hand-made concepts' test pairs)")
    figure.colorbar(shown, ax=left, fraction=0.046)
    shown = right.imshow(pairs - pairs.mean(axis=1, keepdims=True), cmap="viridis")
    sorted_concepts = np.array(concepts)[order]
    edges = np.flatnonzero(sorted_concepts[1:] != sorted_concepts[:-1]) + 0.5
    for edge in edges:  # concept boundaries: a bright block on the diagonal is retrieval working
        right.axhline(edge, color="white", linewidth=0.3)
        right.axvline(edge, color="white", linewidth=0.3)
    centres = (np.concatenate([[-0.5], edges]) + np.concatenate([edges, [len(order) - 0.5]])) / 2
    labels = [sorted_concepts[int(np.ceil(c))] for c in centres]
    right.set_xticks(centres, labels, rotation=90, fontsize=5)
    right.set_yticks(centres, labels, fontsize=5)
    right.set_xlabel("images, grouped by their sounding concept")
    right.set_ylabel("audio clips, grouped by concept")
    right.set_title("every test pair, row-centred cosine (white lines: concept boundaries)")
    figure.colorbar(shown, ax=right, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")  # nothing clipped
    plt.close(figure)
    return path


def localisation_figure(world: WorldManifest, maps: np.ndarray, path: Path, title: str,
                        count: int = 8) -> Path:
    """Two-object scenes: the sounding object's box (green) and the audio's heat map."""
    from PIL import Image

    records = world.localisation[:count]
    size = world.sizes.image_size
    images = [Image.open(world.path(r["image"])).convert("RGB") for r in records]
    boxes = [[[v / size for v in r["box"]]] for r in records]
    titles = [f"sound: {r['concept']}" for r in records]
    return plot_heatmaps(images, maps[:count], boxes, titles, path, suptitle=title,
                         box_label="green box: the sounding object (the other object is silent)",
                         heat_label="audio-patch cosine")


def joint_space_map(image: np.ndarray, audio: np.ndarray, text: np.ndarray, path: Path) -> Path:
    """A 2-D PCA map of the joint space, coloured by modality."""
    plt = pyplot()
    rows = np.vstack([image, audio, text])
    centred = rows - rows.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    points = centred @ components[:2].T
    explained = 100 * singular[:2] ** 2 / np.sum(singular ** 2)
    figure, axis = plt.subplots(figsize=(5.5, 5))
    start = 0
    for label, block, colour in (("image", image, "tab:blue"), ("audio", audio, "tab:orange"),
                                 ("text", text, "tab:green")):
        chunk = points[start:start + len(block)]
        axis.scatter(chunk[:, 0], chunk[:, 1], s=6, alpha=0.6, label=label, color=colour)
        start += len(block)
    axis.legend()
    axis.set_xlabel(f"principal component 1 ({explained[0]:.0f}% of the variance)")
    axis.set_ylabel(f"principal component 2 ({explained[1]:.0f}% of the variance)")
    axis.set_title("joint space (PCA), coloured by modality")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.text(0.5, 0.01, "The first two components mostly separate the modalities: the joint\n"
                "space keeps a modality gap (cross-modal cosines sit below same-modality ones),\n"
                "while the ranking within each direction still pairs sounds with their pictures.",
                ha="center", fontsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # nothing clipped
    plt.close(figure)
    return path
