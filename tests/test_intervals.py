"""Bootstrap intervals, paired differences and the spread over seeds, on hand-made numbers."""

import numpy as np
import pytest

from cmcr.eval import intervals, metrics
from cmcr.spaces.geometry import effective_dim, matched_cosine, modality_gap
from cmcr.world.regime import noise_cosine, random_unit_rows


def test_per_query_scores_average_to_the_retrieval_metrics():
    rng = np.random.default_rng(0)
    similarity = np.round(rng.standard_normal((40, 25)), 1)  # rounding makes ties
    positives = rng.random((40, 25)) < 0.1
    positives[0] = False  # a query without positives: a miss for R@k, skipped by mAP
    per_query = intervals.per_query_retrieval(similarity, positives)
    expected = metrics.retrieval_metrics(similarity, positives)
    assert set(per_query) == set(expected)
    for key, values in per_query.items():
        assert values.shape == (40,)
        assert np.nanmean(values) == pytest.approx(expected[key])
    assert np.isnan(per_query["mAP"][0]) and per_query["R@10"][0] == 0


def test_interval_of_a_constant_is_that_constant():
    assert intervals.bootstrap_interval(np.full(30, 100.0)) == [100.0, 100.0]


def test_interval_brackets_the_mean_and_narrows_with_more_queries():
    few = np.array([100.0, 0.0] * 25)
    many = np.array([100.0, 0.0] * 2500)
    low, high = intervals.bootstrap_interval(few)
    assert low < 50.0 < high
    assert 25 < high - low < 35  # binomial: 2 * 1.96 * sqrt(0.25 / 50) * 100 = 27.7
    low_many, high_many = intervals.bootstrap_interval(many)
    assert high_many - low_many < (high - low) / 5


def test_bootstrap_skips_nan_queries():
    values = np.array([np.nan, 40.0, 60.0, np.nan])
    means = intervals.bootstrap_means(values, resamples=200)
    finite = means[~np.isnan(means)]
    assert np.all((finite >= 40.0) & (finite <= 60.0))


def test_paired_difference_of_a_clear_win_is_significant():
    treated = np.array([100.0] * 30 + [0.0] * 10)
    control = np.array([0.0] * 40)
    effect = intervals.paired_difference(treated, control)
    assert effect["effect"] == pytest.approx(75.0)
    assert effect["significant"] and effect["ci95"][0] > 50


def test_paired_difference_of_a_tie_is_not_significant():
    treated = np.array([100.0, 0.0] * 20)
    control = np.array([0.0, 100.0] * 20)  # same mean, every query differs
    effect = intervals.paired_difference(treated, control)
    assert effect["effect"] == 0.0 and not effect["significant"]
    assert effect["ci95"][0] < 0 < effect["ci95"][1]


def test_pairing_removes_the_variation_shared_by_both_methods():
    rng = np.random.default_rng(1)
    shared = rng.choice([0.0, 100.0], size=60)
    effect = intervals.paired_difference(shared + 2.0, shared)
    assert effect["ci95"] == pytest.approx([2.0, 2.0]) and effect["significant"]


def test_paired_difference_needs_the_same_queries():
    with pytest.raises(ValueError, match="one value per query"):
        intervals.paired_difference(np.zeros(3), np.zeros(4))


def test_spread_over_seeds_uses_the_t_distribution():
    summary = intervals.spread([1.0, 2.0, 3.0])
    assert summary["mean"] == 2.0 and summary["std"] == pytest.approx(1.0)
    assert summary["min"] == 1.0 and summary["max"] == 3.0 and summary["values"] == [1, 2, 3]
    half = 4.302653 / np.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert summary["ci95"] == pytest.approx([2.0 - half, 2.0 + half], abs=1e-5)
    single = intervals.spread([5.0])
    assert single["std"] == 0.0 and single["ci95"] == [5.0, 5.0]


def test_modality_gap_and_matched_cosine_on_hand_made_rows():
    up, down = np.array([[0.0, 1.0]]), np.array([[0.0, -1.0]])
    assert modality_gap(up, down) == pytest.approx(2.0)
    assert modality_gap(np.vstack([up, down]), np.vstack([down, up])) == 0.0
    right = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert matched_cosine(right, right) == pytest.approx(1.0)
    assert matched_cosine(right, right[::-1]) == pytest.approx(0.0)


@pytest.mark.parametrize("dim", [32, 512])
def test_noise_cosine_follows_the_dimension(dim):
    rows = random_unit_rows(4000, dim)
    expected = 1.0 / np.sqrt(1.0 + dim * 0.004)  # |eps|^2 ~ d sigma^2, nearly orthogonal to x
    assert noise_cosine(rows, 0.004) == pytest.approx(expected, abs=0.01)
    assert noise_cosine(rows, 0.0) == pytest.approx(1.0)


def test_effective_dim_counts_the_directions_rows_use():
    rng = np.random.default_rng(0)
    isotropic = rng.standard_normal((20000, 8))
    assert effective_dim(isotropic) == pytest.approx(8.0, rel=0.02)
    line = np.outer(rng.standard_normal(500), np.ones(6))
    assert effective_dim(line) == pytest.approx(1.0, abs=1e-6)
    two_of_four = np.concatenate([rng.standard_normal((20000, 2)), np.zeros((20000, 2))], axis=1)
    assert effective_dim(two_of_four) == pytest.approx(2.0, rel=0.02)
