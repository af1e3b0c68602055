"""``cmcr inspect``'s words: the measured geometry beside real CLIP's and the toy spaces', and
the recommendation with its reason."""

from __future__ import annotations

from typing import Any

from cmcr.eval.tables import text_table
from cmcr.recipes import RECIPES
from cmcr.spaces.geometry import (REAL_CLIP, REAL_CLIP_SOURCE, TOY_SPACES, 
                           variance_for_noise_cosine)

GEOMETRY_LABELS: dict[str, tuple[str, str]] = {
    "dim": ("dim", "{:d}"),
    "effective_dim": ("participation ratio (media rows)", "{:.1f}"),
    "modality_gap": ("modality gap (centroid distance)", "{:.3f}"),
    "gap_stability": ("gap direction stability (cosine of halves)", "{:.3f}"),
    "matched_cosine": ("matched-pair cosine", "{:.3f}"),
    "within_cosine": ("mean cosine within a modality", "{:.3f}"),
    "paired_residual_variance": ("paired residual variance per dim", "{:.5f}"),
    "noise_cosine": ("cosine left by the noise", "{:.3f}"),
}


def geometry_table(columns: dict[str, dict[str, Any]], markdown: bool = False) -> str:
    """A table with one row per geometry key and one column per named geometry (missing or
    None values print as "-")."""
    rows = []
    for key, (label, fmt) in GEOMETRY_LABELS.items():
        cells = []
        for values in columns.values():
            value = values.get(key)
            cells.append("-" if value is None else fmt.format(int(value) if key == "dim" else value))
        rows.append([label, *cells])
    return text_table(["", *columns], rows, markdown)



def stores_table(result: dict[str, Any]) -> str:
    rows = [[s["store"], s["modality"] or "-", s["rows"], s["measured_rows"], s["dim"],
             f"{s['effective_dim']:.1f}", f"{s['within_cosine']:.3f}"] for s in result["stores"]]
    return text_table(["store", "modality", "rows", "measured", "dim", "participation ratio",
                       "within cosine"], rows)


def recommendation_text(recommendation: dict[str, Any]) -> list[str]:
    """Which recipe, from which map cell, and the evidence for it."""
    cell = recommendation["cell_geometry"]
    where = (f"the nearest regime-map cell is {recommendation['cell']} (measured there: "
             f"participation ratio {cell['effective_dim']:.0f}, gap {cell['modality_gap']:.2f}, "
             f"matched cosine {cell['matched_cosine']:.2f})")
    lines = [f"recommended recipe: {recommendation['recipe']}"]
    effect = recommendation["effect_over_cmcr_R@1"]
    if effect is None:
        lines.append(f"  why: {where}; there no other recipe beat the paper's with a paired "
                     "95% interval above zero, so the paper's recipe stays")
    else:
        low, high = effect["ci95"]
        lines.append(f"  why: {where}; there it beat the paper's recipe by {effect['effect']:+.1f} "
                     f"audio->image R@1 [{low:+.1f}, {high:+.1f}] (R@1 "
                     f"{recommendation['cmcr_R@1']:.1f} -> {recommendation['recipe_R@1']:.1f})")
    method = (recommendation.get("settings") or {}).get("method") or {}
    named = next((name for name, values in RECIPES.items() if values and values == method), None)
    if named:
        lines.append(f"  how: cmcr connect CONFIG --set recipe={named}")
    elif method:
        lines.append("  how: cmcr connect CONFIG " + " ".join(
            f"--set method.{key}={str(value).lower() if isinstance(value, bool) else value}"
            for key, value in method.items()))
    if recommendation["cmcr_R@1"] > 90:
        lines.append("  caution: in that cell every recipe is near the ceiling (the generated "
                     "task is easy at high matched cosine), so the gain is small evidence")
    if recommendation["far"]:
        lines.append("  caution: your geometry is far from every cell of the map; treat this "
                     "as a guess and compare recipes on your own held-out pairs")
    lines.append("  (measured on generated data of that geometry, not on your encoders: "
                 "docs/regimes.md)")
    return lines


def noise_lines(result: dict[str, Any]) -> list[str]:
    """What sigma^2 leaves of a row, the sigma^2 of a noise cosine when one was asked for, and
    each paired space's residual (the sigma^2 that noise_calibration 1.0 would use)."""
    space = result["spaces"][0]
    lines = [f"noise: sigma^2 {result['noise_var']:g} leaves cosine {space['noise_cosine']:.3f} "
             f"of a row at dim {space['dim']}"]
    if result.get("noise_cosine") is not None:
        variance = variance_for_noise_cosine(space["dim"], result["noise_cosine"])
        lines.append(f"       noise_cosine {result['noise_cosine']:g} is sigma^2 {variance:.3g} "
                     f"at dim {space['dim']}")
    for index, paired in enumerate(result["spaces"]):
        if paired.get("paired_residual_variance") is not None:
            residual = paired["paired_residual_variance"]
            lines.append(f"       space {index + 1}'s paired residual: {residual:.3g} per dim, "
                         f"{result['noise_var'] / residual:.1f}x below sigma^2 "
                         f"{result['noise_var']:g} (noise_calibration 1.0 uses the text-pseudo "
                         "residual measured at training time)")
    return lines


def inspect_text(result: dict[str, Any]) -> str:
    """The whole report ``cmcr inspect`` prints."""
    parts = [stores_table(result), ""]
    for index, space in enumerate(result["spaces"]):
        columns = {f"yours ({index + 1})": space, "real CLIP ViT-B/16": REAL_CLIP, **TOY_SPACES}
        paired = (f"paired by id on {space['paired_rows']} rows" if space["paired_rows"]
                  else "not paired (no shared ids): matched cosine and residual need pairs")
        parts += [f"space {index + 1}: {space['stores'][0]} vs {space['stores'][1]} ({paired})",
                  geometry_table(columns), ""]
    if result["spaces"]:
        parts += noise_lines(result) + [""]
        parts += recommendation_text(result["recommendation"]) + [""]
    else:
        parts += ["give two stores of one space (e.g. image rows, then caption rows) for the "
                  "modality gap and a recommendation", ""]
    if any(s["measured_rows"] < s["rows"] for s in result["stores"]):
        parts.append(f"(stores over {result['sample_limit']} rows were measured on a uniform "
                     "sample; --sample changes it)")
    parts.append(f"real CLIP: {REAL_CLIP_SOURCE}")
    return "\n".join(parts)
