"""cmcr.spaces.geometry on real CLIP rows and on generated spaces of known geometry."""

from pathlib import Path

import numpy as np
import pytest

from cmcr.spaces import geometry
from cmcr.study.geometry_data import Geometry, Sizes, make_two_spaces, spectrum_for

REAL_ROWS = Path(__file__).parent / "data" / "real-clip" / "features_clip.npy"


@pytest.fixture(scope="module")
def real_clip():
    image, text = np.load(REAL_ROWS)
    return image, text


def test_real_clip_rows_reproduce_the_published_geometry(real_clip):
    image, text = real_clip
    measured = geometry.space_geometry(image, text, noise_var=0.004)
    assert measured["modality_gap"] == pytest.approx(0.851, abs=0.001)
    assert measured["matched_cosine"] == pytest.approx(0.310, abs=0.001)
    assert geometry.within_cosine(image) == pytest.approx(0.531, abs=0.001)
    assert geometry.within_cosine(text) == pytest.approx(0.515, abs=0.001)
    assert measured["effective_dim"] == pytest.approx(42.7, abs=0.1)
    assert geometry.effective_dim(text) == pytest.approx(41.7, abs=0.1)
    assert measured["paired_residual_variance"] == pytest.approx(0.00128, abs=0.00001)
    assert measured["gap_stability"] > 0.99
    for key in geometry.GEOMETRY_KEYS:  # the constant cmcr prints is what the rows give
        assert measured[key] == pytest.approx(geometry.REAL_CLIP[key], rel=0.01, abs=0.002), key


def test_within_cosine_is_the_mean_over_distinct_pairs():
    rows = geometry.unit_rows(np.random.default_rng(0).standard_normal((50, 8)) + 0.5)
    cosines = rows @ rows.T
    brute = cosines[~np.eye(50, dtype=bool)].mean()
    assert geometry.within_cosine(rows) == pytest.approx(brute, abs=1e-12)


def test_gap_stability_tells_a_real_gap_from_none():
    rng = np.random.default_rng(1)
    first = rng.standard_normal((2000, 64))
    assert geometry.gap_stability(first, rng.standard_normal((2000, 64))) < 0.5
    shift = np.zeros(64)
    shift[0] = 3.0
    assert geometry.gap_stability(first + shift, rng.standard_normal((2000, 64))) > 0.95


def test_effective_dim_is_the_same_from_either_gram_side():
    rows = np.random.default_rng(2).standard_normal((40, 100))  # fewer rows than dims
    unit = geometry.unit_rows(rows)
    eigen = np.clip(np.linalg.eigvalsh(np.cov(unit.T)), 0, None)
    assert geometry.effective_dim(rows) == pytest.approx(eigen.sum() ** 2 / (eigen ** 2).sum())


def test_noise_cosine_and_its_inverse():
    variance = geometry.variance_for_noise_cosine(512, 0.98)
    assert geometry.noise_cosine_at(512, variance) == pytest.approx(0.98)
    assert geometry.noise_cosine_at(512, 0.004) == pytest.approx(0.573, abs=0.001)


def test_spectrum_has_the_asked_participation_ratio():
    for target in (10.0, 40.0, 120.0):
        values = spectrum_for(target, 512)
        assert values.sum() == pytest.approx(1.0)
        assert values.sum() ** 2 / (values ** 2).sum() == pytest.approx(target, rel=1e-3)


@pytest.mark.parametrize("asked", [Geometry(40.0, 0.85, 0.31), Geometry(20.0, 0.5, 0.6)])
def test_generated_spaces_have_the_asked_geometry(asked):
    arrays = make_two_spaces(asked, Sizes(texts=64, memory=64, test_pairs=3000), seed=3)
    for media, text in (("test_image", "test_text_a"), ("test_audio", "test_text_b")):
        measured = geometry.space_geometry(arrays[media], arrays[text], 0.004)
        assert measured["effective_dim"] == pytest.approx(asked.effective_dim, rel=0.15)
        assert measured["modality_gap"] == pytest.approx(asked.modality_gap, abs=0.02)
        assert measured["matched_cosine"] == pytest.approx(asked.matched_cosine, abs=0.02)
        assert measured["gap_stability"] > 0.95


def test_impossible_geometry_is_refused():
    with pytest.raises(ValueError, match="matched cosine"):
        Geometry(40.0, 0.85, 0.9).shares()
