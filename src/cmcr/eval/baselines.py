"""Baselines C-MCR is judged against, on frozen-space embeddings (the demo, the example).

- text pivot: audio -> its best caption in CLAP -> that caption in CLIP -> images;
- linear map: (ridge) least squares fitted through the shared modality, CLAP text -> CLIP text,
  then applied to audio.
"""

from __future__ import annotations

import numpy as np


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def text_pivot(audio_clap: np.ndarray, texts_clap: np.ndarray, texts_clip: np.ndarray) -> np.ndarray:
    """Audio rows (CLAP) -> the CLIP embedding of each clip's nearest caption: (n, d_clip)."""
    nearest = np.argmax(audio_clap @ texts_clap.T, axis=1)
    return texts_clip[nearest]


def fit_linear_map(source: np.ndarray, target: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Ridge least squares W (bias row last): [source, 1] @ W ~ target."""
    design = np.hstack([source, np.ones((len(source), 1))])
    gram = design.T @ design + ridge * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ target)


def apply_linear_map(weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return _unit(np.hstack([rows, np.ones((len(rows), 1))]) @ weights)
