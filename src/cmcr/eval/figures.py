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
                  titles: Sequence[str], path: Path) -> Path:
    """One column per item: the image with its boxes, and the heat map laid over it."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    count = max(1, len(images))
    figure, axes = plt.subplots(2, count, figsize=(2.2 * count, 4.6), squeeze=False)
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
        axes[1][column].imshow(heat, cmap="jet", alpha=0.5)
        axes[0][column].set_title(title, fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
