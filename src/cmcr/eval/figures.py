"""Figures saved beside the JSON they are drawn from (matplotlib, an optional extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmcr.errors import MissingDependencyError


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or an error naming the package to install."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("figures need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_heatmaps(images: Sequence[Any], heatmaps: np.ndarray, boxes: Sequence[Sequence[Sequence[float]]],
                  titles: Sequence[str], path: Path, suptitle: str | None = None,
                  box_label: str = "annotated box", heat_label: str = "similarity") -> Path:
    """One column per item: the image with its boxes (green), and the heat map laid over it, on
    one colour scale for all items (the colour bar's)."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    count = max(1, len(images))
    figure, axes = plt.subplots(2, count, figsize=(2.2 * count + 1.2, 5.2), squeeze=False)
    low, high = float(np.min(heatmaps)), float(np.max(heatmaps))
    for column, (image, heat, item_boxes, title) in enumerate(zip(images, heatmaps, boxes, titles)):
        height, width = heat.shape
        shown = np.asarray(image.resize((width, height)))
        for row in (0, 1):
            axis = axes[row][column]
            axis.imshow(shown)
            axis.set_axis_off()
            for x0, y0, x1, y1 in item_boxes:
                axis.add_patch(Rectangle((x0 * width, y0 * height), (x1 - x0) * width,
                                         (y1 - y0) * height, fill=False, color="lime", linewidth=1))
        shown_heat = axes[1][column].imshow(heat, cmap="jet", alpha=0.5, vmin=low, vmax=high)
        axes[0][column].set_title(title, fontsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.08, wspace=0.05, hspace=0.12)
    figure.colorbar(shown_heat, ax=list(axes[1]), fraction=0.02, pad=0.01).set_label(heat_label,
                                                                                    fontsize=7)
    figure.legend(handles=[Line2D([], [], color="lime", linewidth=2, label=box_label)],
                  loc="lower left", fontsize=7, frameon=False)
    if suptitle:
        figure.suptitle(suptitle, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")  # nothing clipped
    plt.close(figure)
    return path
