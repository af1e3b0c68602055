"""The baselines C-MCR is judged against."""

import numpy as np

from cmcr.eval.baselines import apply_linear_map, fit_linear_map, text_pivot


def test_text_pivot_takes_the_nearest_captions_other_embedding():
    audio = np.array([[1.0, 0.0], [0.0, 1.0]])
    captions_clap = np.array([[0.0, 1.0], [1.0, 0.0]])
    captions_clip = np.array([[10.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    assert np.array_equal(text_pivot(audio, captions_clap, captions_clip), captions_clip[[1, 0]])


def test_linear_map_recovers_an_exact_linear_relation():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 5))
    weights = rng.normal(size=(5, 3))
    target = source @ weights + 0.5
    mapped = apply_linear_map(fit_linear_map(source, target), source[:10])
    expected = target[:10] / np.linalg.norm(target[:10], axis=1, keepdims=True)
    assert np.allclose(mapped, expected, atol=1e-3)
