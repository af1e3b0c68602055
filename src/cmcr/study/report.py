"""The regime map's table (``regimes.md``) and picture (``regimes.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _interval(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{entry['mean']:.1f} [{low:.1f}, {high:.1f}]"


def _effect(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    star = "*" if entry["significant"] else ""
    return f"{entry['effect']:+.1f} [{low:+.1f}, {high:+.1f}]{star}"


def cell_label(cell: dict[str, Any]) -> str:
    g = cell["geometry"]
    return f"PR {g['effective_dim']:g}, gap {g['modality_gap']:g}, matched {g['matched_cosine']:g}"


def study_markdown(summary: dict[str, Any]) -> str:
    """One section per cell: each recipe's R@1 and mAP with intervals and its paired effect
    over the paper's recipe; the recommendation first."""
    settings = summary["settings"]
    lines = ["# Regime map", "",
             f"{len(summary['cells'])} cells x seeds {list(settings['seeds'])}; audio -> image on "
             f"{settings['sizes']['test_pairs']} held-out pairs per seed, percent; intervals: 95% "
             "bootstrap over queries, stratified by seed; `*`: the paired interval excludes 0.",
             "", "| cell | measured PR / gap / matched | recommended | its R@1 over cmcr | "
             "cmcr R@1 | noise's effect (cmcr - no_noise) |", "|---|---|---|---|---|---|"]
    for cell in summary["cells"]:
        measured, table = cell["measured"]["a"], cell["recipes"]
        best = cell["recommended"]
        gain = _effect(table[best]["R@1"]["minus_cmcr"]) if best != "cmcr" else "-"
        lines.append(f"| {cell_label(cell)} | {measured['effective_dim']:.0f} / "
                     f"{measured['modality_gap']:.2f} / {measured['matched_cosine']:.2f} | "
                     f"**{best}** | {gain} | {table['cmcr']['R@1']['mean']:.1f} | "
                     f"{_noise_effect(table)} |")
    for cell in summary["cells"]:
        lines += ["", f"## {cell_label(cell)}", "",
                  "| recipe | R@1 | mAP | R@1 minus cmcr | mAP minus cmcr |", "|---|---|---|---|---|"]
        for name, row in cell["recipes"].items():
            lines.append(f"| {name} | {_interval(row['R@1'])} | {_interval(row['mAP'])} | "
                         f"{_effect(row['R@1']['minus_cmcr'])} | {_effect(row['mAP']['minus_cmcr'])} |")
    return "\n".join(lines) + "\n"


def _noise_effect(table: dict[str, Any]) -> str:
    if "no_noise" not in table:
        return "-"
    effect = -table["no_noise"]["R@1"]["minus_cmcr"]["effect"]
    low, high = (-v for v in reversed(table["no_noise"]["R@1"]["minus_cmcr"]["ci95"]))
    star = "*" if table["no_noise"]["R@1"]["minus_cmcr"]["significant"] else ""
    return f"{effect:+.1f} [{low:+.1f}, {high:+.1f}]{star}"


def draw_map(summary: dict[str, Any], path: Path) -> None:
    """Two panels over (gap, matched cosine) rows x participation-ratio columns: the
    recommended recipe (colour) with its R@1, and the paper's noise effect on R@1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summary["cells"]
    rows = sorted({(c["geometry"]["modality_gap"], c["geometry"]["matched_cosine"]) for c in cells})
    cols = sorted({c["geometry"]["effective_dim"] for c in cells})
    recipes = sorted({c["recommended"] for c in cells})
    colour = np.full((len(rows), len(cols)), np.nan)
    noise = np.full((len(rows), len(cols)), np.nan)
    figure, axes = plt.subplots(1, 2, figsize=(12, 1.4 + 1.1 * len(rows)))
    for cell in cells:
        g = cell["geometry"]
        i, j = rows.index((g["modality_gap"], g["matched_cosine"])), cols.index(g["effective_dim"])
        colour[i, j] = recipes.index(cell["recommended"])
        table = cell["recipes"]
        noise[i, j] = table["cmcr"]["R@1"]["mean"] - table.get("no_noise", table["cmcr"])["R@1"]["mean"]
        best = cell["recommended"]
        axes[0].text(j, i, f"{best}\nR@1 {table[best]['R@1']['mean']:.1f}\n(cmcr "
                     f"{table['cmcr']['R@1']['mean']:.1f})", ha="center", va="center", fontsize=8)
        axes[1].text(j, i, f"{noise[i, j]:+.1f}", ha="center", va="center", fontsize=9)
    axes[0].imshow(colour, cmap="Pastel1", vmin=0, vmax=8, aspect="auto")
    limit = max(1.0, float(np.nanmax(np.abs(noise))))
    image = axes[1].imshow(noise, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    figure.colorbar(image, ax=axes[1], label="R@1 points: cmcr minus no_noise")
    titles = ("recommended recipe (best paired R@1 interval over cmcr)",
              "the paper's noise (sigma^2 0.004): effect on R@1")
    for axis, title in zip(axes, titles):
        axis.set_xticks(range(len(cols)), [f"PR {c:g}" for c in cols])
        axis.set_yticks(range(len(rows)), [f"gap {g:g}\nmatched {m:g}" for g, m in rows])
        axis.set_title(title, fontsize=10)
    figure.suptitle("C-MCR regime map: generated two-space data, audio -> image, "
                    f"{len(summary['settings']['seeds'])} seeds per cell", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")  # nothing clipped
    plt.close(figure)


def write_study_report(out_dir: Path, summary: dict[str, Any]) -> None:
    (out_dir / "regimes.md").write_text(study_markdown(summary), encoding="utf-8")
    draw_map(summary, out_dir / "regimes.png")
