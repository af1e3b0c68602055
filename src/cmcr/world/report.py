"""The demo's outputs for people: a terminal table, report.md and PNG figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cmcr.eval.figures import plot_heatmaps, pyplot
from cmcr.model import ConnectedModel
from cmcr.world.generate import WorldManifest
from cmcr.world.stages import FrozenEmbeddings, records_field

METHOD_ORDER = ["cmcr", "paired_upper_bound", "text_pivot", "linear_map", "no_noise",
                "no_memory", "no_intra", "chance"]
COLUMNS = ["R@1", "R@5", "R@10", "mAP"]


def retrieval_table(results: dict[str, Any], direction: str, markdown: bool = False) -> str:
    """Methods x R@1/R@5/R@10/mAP for one direction."""
    methods = [m for m in METHOD_ORDER if m in results["methods"]]
    rows = [[m] + [f"{results['methods'][m][direction][c]:.1f}" for c in COLUMNS] for m in methods]
    return _table(["method"] + COLUMNS, rows, markdown)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                              for i, (v, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header)] + [fmt(r) for r in rows])


def _metric_rows(block: dict[str, dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    keys = list(next(iter(block.values())))
    return ["method"] + keys, [[name] + [f"{values[k]:.1f}" for k in keys]
                               for name, values in block.items()]


def summary_text(results: dict[str, Any], markdown: bool = False) -> str:
    """Everything the demo measured, as tables."""
    retention = results["retention"]
    retention_rows = [["image -> text (CLIP)", f"{retention['image_text_top1']['original']:.1f}",
                       f"{retention['image_text_top1']['joint']:.1f}"],
                      ["audio -> text (CLAP)", f"{retention['audio_text_top1']['original']:.1f}",
                       f"{retention['audio_text_top1']['joint']:.1f}"]]
    parts = [
        f"audio -> image retrieval, {results['test_pairs']} held-out pairs never seen in "
        "training (percent; positives: images of the sound's concept)",
        retrieval_table(results, "audio_to_image", markdown), "",
        "image -> audio retrieval", retrieval_table(results, "image_to_audio", markdown), "",
        "retention: zero-shot top-1 (percent) in the original space vs the joint space "
        f"(chance {retention['chance_top1']:.1f})",
        _table(["task", "original", "joint"], retention_rows, markdown), "",
        "sound-source localisation (percent)", _table(*_metric_rows(results["localisation"]),
                                                      markdown), "",
        "counterfactual recognition (percent)", _table(*_metric_rows(results["counterfactual"]),
                                                       markdown),
    ]
    ratio = results.get("cmcr_to_upper_bound_R@1")
    if ratio is not None:
        parts += ["", f"C-MCR reaches {100 * ratio:.0f}% of the paired upper bound's audio->image R@1."]
    return "\n".join(parts)


def write_report(out_dir: Path, results: dict[str, Any]) -> Path:
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items())
    text = "\n".join([
        f"# cmcr demo — seed {results['seed']}", "",
        "Two toy spaces trained on disjoint data (a CLIPModel on image/look-caption pairs, a "
        "ClapModel on audio/sound-caption pairs), connected by C-MCR through texts plus unpaired "
        "image and audio memories, judged on audio-image pairs no stage ever saw.", "",
        summary_text(results, markdown=True), "",
        "## Figures", "",
        "![retrieval](retrieval_grid.png)", "", "![similarity](similarity_matrix.png)", "",
        "![localisation](localisation.png)", "",
        "![localisation, value patches](localisation_values.png)", "", "![joint space](joint_space.png)", "",
        f"Time: {seconds}.", ""])
    path = out_dir / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


# -- figures ---------------------------------------------------------------------------------------
def write_figures(out_dir: Path, world: WorldManifest, frozen: FrozenEmbeddings,
                  model: ConnectedModel, maps: dict[str, np.ndarray], positives: np.ndarray
                  ) -> None:
    image = model.project("clip", frozen["test_image"]).numpy()
    audio = model.project("clap", frozen["test_audio"]).numpy()
    similarity = audio @ image.T
    concepts = records_field(world, "test_pairs", "concept")
    retrieval_grid(world, similarity, positives, out_dir / "retrieval_grid.png")
    similarity_matrix(similarity, concepts, out_dir / "similarity_matrix.png")
    localisation_figure(world, maps["cmcr"], out_dir / "localisation.png",
                        "C-MCR: where is the sound? audio vs CLIP patch tokens in the joint space")
    localisation_figure(world, maps["cmcr_value_patches"], out_dir / "localisation_values.png",
                        "C-MCR: where is the sound? audio vs CLIP value patches (MaskCLIP) "
                        "in the joint space")
    joint_space_map(image, audio, model.project("clip", frozen["clip_text"][:300]).numpy(),
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
    figure.tight_layout()
    figure.savefig(path, dpi=110)
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
    left.set_title("mean joint-space cosine per concept pair")
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
    figure.savefig(path, dpi=110)
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
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
