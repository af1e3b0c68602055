"""Retrieval metrics: hand-computed cases, an independent implementation, chance levels, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcr.eval.metrics import (
    chance_retrieval_metrics,
    mean_average_precision,
    ranks_of_positives,
    recall_at_k,
    retrieval_metrics,
)


# -- hand-computed ---------------------------------------------------------------------------------
def test_recall_at_k_on_a_hand_computed_case():
    similarity = np.array([
        [0.9, 0.1, 0.2],   # positive 0 ranked first
        [0.8, 0.5, 0.1],   # positive 1 ranked second
        [0.7, 0.6, 0.3],   # positive 2 ranked third
        [0.1, 0.2, 0.3],
    ])
    positives = np.zeros((4, 3), dtype=bool)
    positives[[0, 1, 2, 3], [0, 1, 2, 0]] = True  # query 3: positive 0, ranked third
    assert recall_at_k(similarity, positives, ks=(1, 2, 3)) == {"R@1": 25.0, "R@2": 50.0, "R@3": 100.0}


def test_mean_average_precision_with_one_positive_is_mean_reciprocal_rank():
    similarity = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.7, 0.6, 0.3]])
    # ranks 1, 2, 3 -> AP 1, 1/2, 1/3
    expected = 100 * (1 + 1 / 2 + 1 / 3) / 3
    assert mean_average_precision(similarity, np.eye(3, dtype=bool)) == pytest.approx(expected)


def test_several_positives_per_query_hand_computed():
    similarity = np.array([[0.9, 0.8, 0.7, 0.6]])
    positives = np.array([[False, True, False, True]])
    # positives at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5; the best positive is at rank 2
    assert mean_average_precision(similarity, positives) == pytest.approx(50.0)
    assert recall_at_k(similarity, positives, ks=(1, 2, 4)) == {"R@1": 0.0, "R@2": 100.0, "R@4": 100.0}
    assert list(ranks_of_positives(similarity, positives)[0]) == [1, 3]


def test_tie_with_a_negative_counts_against_the_positive():
    similarity = np.array([[0.5, 0.5, 0.1]])
    positives = np.array([[True, False, False]])
    assert recall_at_k(similarity, positives, ks=(1, 2)) == {"R@1": 0.0, "R@2": 100.0}
    assert mean_average_precision(similarity, positives) == pytest.approx(50.0)


def test_ties_among_positives_and_a_negative_are_pessimistic():
    similarity = np.array([[0.5, 0.5, 0.5, 0.1]])
    positives = np.array([[True, True, False, False]])
    # the negative ranks first, then the two positives: AP = (1/2 + 2/3) / 2
    assert list(ranks_of_positives(similarity, positives)[0]) == [1, 2]
    assert mean_average_precision(similarity, positives) == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


def test_tied_positives_alone_rank_first():
    similarity = np.array([[0.5, 0.5, 0.1]])
    positives = np.array([[True, True, False]])
    assert mean_average_precision(similarity, positives) == pytest.approx(100.0)


def test_query_without_positive_is_a_miss_for_recall_and_skipped_by_map():
    similarity = np.array([[0.9, 0.1], [0.3, 0.4]])
    positives = np.array([[True, False], [False, False]])
    assert recall_at_k(similarity, positives, ks=(1,)) == {"R@1": 50.0}
    assert mean_average_precision(similarity, positives) == pytest.approx(100.0)


def test_map_without_any_positive_is_nan():
    assert np.isnan(mean_average_precision(np.ones((2, 3)), np.zeros((2, 3), dtype=bool)))


def test_retrieval_metrics_defaults_to_diagonal_positives():
    similarity = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.7, 0.6, 0.3]])
    metrics = retrieval_metrics(similarity, ks=(1, 2))
    assert metrics == pytest.approx({"R@1": 100 / 3, "R@2": 200 / 3, "mAP": 100 * (11 / 6) / 3})
    assert metrics == retrieval_metrics(similarity, np.eye(3, dtype=bool), ks=(1, 2))


def test_retrieval_metrics_without_positives_needs_a_square_matrix():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.ones((2, 3)))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        recall_at_k(np.ones((2, 3)), np.ones((3, 2), dtype=bool))


def test_perfect_ranking_scores_one_hundred():
    similarity = np.eye(20) + 0.01 * np.random.default_rng(0).random((20, 20))
    assert retrieval_metrics(similarity) == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "mAP": 100.0}


# -- against torchmetrics --------------------------------------------------------------------------
def _torchmetrics_scores(similarity, positives, ks):
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.retrieval", reason="pip install torchmetrics")
    # torchmetrics treats a score <= 0 as "not retrieved": shift (keeps every ranking) above 0.
    shifted = similarity - similarity.min() + 1.0
    preds = torch.as_tensor(shifted, dtype=torch.float64).flatten()
    target = torch.as_tensor(positives).flatten()
    indexes = torch.arange(similarity.shape[0]).repeat_interleave(similarity.shape[1])
    scores = {f"R@{k}": 100 * tm.RetrievalHitRate(top_k=k)(preds, target, indexes=indexes).item()
              for k in ks}
    scores["recall"] = {k: 100 * tm.RetrievalRecall(top_k=k)(preds, target, indexes=indexes).item()
                        for k in ks}
    scores["mAP"] = 100 * tm.RetrievalMAP()(preds, target, indexes=indexes).item()
    return scores


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_metrics_match_torchmetrics_with_one_positive(seed):
    rng = np.random.default_rng(seed)
    similarity = rng.standard_normal((60, 60)) + 1.5 * np.eye(60)
    ks = (1, 5, 10)
    expected = _torchmetrics_scores(similarity, np.eye(60, dtype=bool), ks)
    metrics = retrieval_metrics(similarity, ks=ks)
    for k in ks:
        assert metrics[f"R@{k}"] == pytest.approx(expected["recall"][k], abs=1e-4)
    assert metrics["mAP"] == pytest.approx(expected["mAP"], abs=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_metrics_match_torchmetrics_with_several_positives(seed):
    rng = np.random.default_rng(seed)
    similarity = rng.standard_normal((40, 50))
    positives = rng.random((40, 50)) < 0.08
    positives[np.arange(40), rng.integers(0, 50, 40)] = True  # every query has a positive
    ks = (1, 3, 10)
    expected = _torchmetrics_scores(similarity, positives, ks)
    metrics = retrieval_metrics(similarity, positives, ks=ks)
    for k in ks:  # cmcr's R@k: at least one positive in the top k (torchmetrics' hit rate)
        assert metrics[f"R@{k}"] == pytest.approx(expected[f"R@{k}"], abs=1e-4)
    assert metrics["mAP"] == pytest.approx(expected["mAP"], abs=1e-4)


# -- chance levels ---------------------------------------------------------------------------------
def _monte_carlo(num_candidates, positives_per_query, ks, queries=20000, seed=0):
    rng = np.random.default_rng(seed)
    similarity = rng.random((queries, num_candidates))
    positives = np.zeros((queries, num_candidates), dtype=bool)
    positives[:, :positives_per_query] = True  # random scores: which columns does not matter
    return retrieval_metrics(similarity, positives, ks=ks)


def test_chance_metrics_with_one_positive_match_monte_carlo():
    ks = (1, 5, 10)
    chance = chance_retrieval_metrics(50, 1, ks=ks)
    estimate = _monte_carlo(50, 1, ks)
    assert chance == pytest.approx({"R@1": 2.0, "R@5": 10.0, "R@10": 20.0,
                                    "mAP": 100 * sum(1 / r for r in range(1, 51)) / 50})
    for key in chance:
        assert estimate[key] == pytest.approx(chance[key], abs=1.0), key


def test_chance_recall_with_several_positives_matches_monte_carlo():
    # P(at least one of p positives in the top k of n) = 1 - C(n-p, k) / C(n, k)
    ks = (1, 5, 10)
    chance = chance_retrieval_metrics(20, 3, ks=ks)
    estimate = _monte_carlo(20, 3, ks)
    for k in ks:
        assert chance[f"R@{k}"] == pytest.approx(estimate[f"R@{k}"], abs=1.5), f"R@{k}"


def test_chance_map_with_several_positives_matches_monte_carlo():
    chance = chance_retrieval_metrics(20, 3, ks=(1,))
    estimate = _monte_carlo(20, 3, (1,))
    assert chance["mAP"] == pytest.approx(estimate["mAP"], abs=1.0)


def test_chance_recall_caps_at_one_hundred():
    assert chance_retrieval_metrics(5, ks=(10,))["R@10"] == 100.0


# -- bounds ----------------------------------------------------------------------------------------
similarities = st.tuples(st.integers(1, 12), st.integers(1, 15), st.integers(0, 2**16),
                         st.sampled_from([None, 3]))


def _random_case(queries, candidates, seed, levels):
    rng = np.random.default_rng(seed)
    similarity = rng.random((queries, candidates))
    if levels:  # few distinct values: many ties
        similarity = np.floor(similarity * levels)
    positives = rng.random((queries, candidates)) < 0.3
    positives[:, 0] = True
    return similarity, positives


@settings(max_examples=60, deadline=None)
@given(case=similarities)
def test_metrics_stay_within_bounds_and_recall_grows_with_k(case):
    similarity, positives = _random_case(*case)
    ks = (1, 2, 5, 10, 20)
    metrics = retrieval_metrics(similarity, positives, ks=ks)
    recalls = [metrics[f"R@{k}"] for k in ks]
    assert all(0.0 <= r <= 100.0 for r in recalls)
    assert recalls == sorted(recalls)
    assert 0.0 < metrics["mAP"] <= 100.0
    if similarity.shape[1] <= 20:
        assert metrics["R@20"] == 100.0


@settings(max_examples=60, deadline=None)
@given(case=similarities)
def test_ranks_are_distinct_and_within_the_candidates(case):
    similarity, positives = _random_case(*case)
    for query_ranks, row in zip(ranks_of_positives(similarity, positives), positives):
        assert len(query_ranks) == row.sum()
        assert len(set(query_ranks.tolist())) == len(query_ranks)
        assert all(0 <= r < len(row) for r in query_ranks)


@settings(max_examples=40, deadline=None)
@given(case=similarities)
def test_metrics_do_not_depend_on_candidate_order(case):
    similarity, positives = _random_case(*case)
    order = np.random.default_rng(case[2]).permutation(similarity.shape[1])
    assert retrieval_metrics(similarity[:, order], positives[:, order]) == pytest.approx(
        retrieval_metrics(similarity, positives))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 500), p=st.integers(1, 5))
def test_chance_metrics_stay_within_bounds(n, p):
    chance = chance_retrieval_metrics(n, min(p, n))
    assert all(0.0 < value <= 100.0 for value in chance.values())


def test_chance_metrics_refuse_more_positives_than_candidates():
    with pytest.raises(ValueError, match="positives_per_query"):
        chance_retrieval_metrics(1, 2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_with_one_positive_map_is_at_least_recall_at_1(n, seed):
    similarity = np.random.default_rng(seed).random((n, n))
    metrics = retrieval_metrics(similarity, ks=(1,))
    assert metrics["R@1"] <= metrics["mAP"] + 1e-9  # a positive ranked first has AP = 1
