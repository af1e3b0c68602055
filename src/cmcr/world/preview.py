"""A contact sheet of a world: images with look captions, spectrograms with sound captions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from cmcr.world.generate import load_world


def _spectrogram(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """(freq, time) log-power spectrogram, 512-sample Hann frames, hop 128."""
    from scipy import signal

    _, _, power = signal.spectrogram(wave, sample_rate, nperseg=512, noverlap=384)
    return 10 * np.log10(power + 1e-10)


def save_preview(world_dir: str | Path, out_png: str | Path, n_images: int = 16,
                 n_audio: int = 4) -> Path:
    """Save a PNG of the first ``n_images`` clip_train images and ``n_audio`` clap_train clips."""
    from matplotlib.figure import Figure

    world = load_world(world_dir)
    columns = 4
    image_rows = -(-n_images // columns)
    figure = Figure(figsize=(columns * 3.2, image_rows * 3.4 + n_audio * 2.4))
    grid = figure.add_gridspec(image_rows + n_audio, columns,
                               height_ratios=[3] * image_rows + [2] * n_audio)
    for index, record in enumerate(world.clip_train[:n_images]):
        axis = figure.add_subplot(grid[index // columns, index % columns])
        axis.imshow(Image.open(world.path(record["image"])), interpolation="nearest")
        axis.set_title("\n".join(textwrap.wrap(record["caption"], 34)), fontsize=7)
        axis.axis("off")
    for index, record in enumerate(world.clap_train[:n_audio]):
        wave, sample_rate = soundfile.read(world.path(record["audio"]), dtype="float32")
        axis = figure.add_subplot(grid[image_rows + index, :])
        axis.imshow(_spectrogram(wave, sample_rate), origin="lower", aspect="auto",
                    extent=(0, len(wave) / sample_rate, 0, sample_rate / 2), cmap="magma")
        axis.set_title(record["caption"], fontsize=8)
        axis.set_ylabel("Hz", fontsize=7)
        axis.set_xlabel("seconds", fontsize=7)
        axis.tick_params(labelsize=6)
    figure.tight_layout()
    out_path = Path(out_png)
    figure.savefig(out_path, dpi=90, bbox_inches="tight")
    return out_path
