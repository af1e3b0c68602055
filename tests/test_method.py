"""The C-MCR objective: noise, InfoNCE, intra-space alignment and how cmcr_loss combines them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcr.config import MethodConfig
from cmcr.method.objective import add_noise, cmcr_loss, info_nce, intra_alignment


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator), dim=1)


unit_batches = st.tuples(st.integers(2, 12), st.integers(2, 16), st.integers(0, 2**16))


# -- noise -----------------------------------------------------------------------------------------
def test_add_noise_returns_unit_rows():
    noisy = add_noise(torch.randn(64, 32) * 5, 0.004, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(64))


@pytest.mark.parametrize("variance", [0.0, -1.0])
def test_add_noise_with_no_variance_only_normalises(variance):
    x = torch.randn(10, 7) * 3
    torch.testing.assert_close(add_noise(x, variance), F.normalize(x, dim=-1), rtol=0, atol=0)


def test_add_noise_is_deterministic_with_a_generator():
    x = torch.randn(16, 8)
    a = add_noise(x, 0.01, torch.Generator().manual_seed(3))
    b = add_noise(x, 0.01, torch.Generator().manual_seed(3))
    c = add_noise(x, 0.01, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_add_noise_variance_sets_the_expected_cosine():
    # eps ~ N(0, var I) in d dims has |eps|^2 ~ d var, so cos(x, x + eps) ~ 1 / sqrt(1 + d var)
    # for unit x (0.57 for the paper's var = 0.004, d = 512; a std of 0.004 would give 0.99).
    dim, variance = 512, 0.004
    x = _unit(2000, dim, 0)
    noisy = add_noise(x, variance, torch.Generator().manual_seed(1))
    cosine = (x * noisy).sum(dim=1).mean().item()
    assert cosine == pytest.approx(1 / math.sqrt(1 + dim * variance), abs=0.01)


@settings(max_examples=30, deadline=None)
@given(shape=unit_batches, variance=st.floats(0.0, 4.0), scale=st.floats(0.1, 100.0))
def test_add_noise_always_gives_unit_rows(shape, variance, scale):
    rows, dim, seed = shape
    x = _unit(rows, dim, seed) * scale
    noisy = add_noise(x, variance, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(noisy.norm(dim=1), torch.ones(rows))


# -- InfoNCE ---------------------------------------------------------------------------------------
def test_info_nce_on_identity_pairs_is_hand_computed():
    eye = torch.eye(2)
    # logits = I / 1: each row's cross-entropy is -log(e / (e + 1)) = log(1 + e^-1)
    assert info_nce(eye, eye, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_info_nce_averages_both_directions_hand_computed():
    left = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    right = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    # logits = left @ right.T / tau = [[1, 0.6], [0, 0.8]] / 0.5 = [[2, 1.2], [0, 1.6]]
    def ce(row, target):
        return -row[target] + math.log(sum(math.exp(v) for v in row))
    left_to_right = (ce([2.0, 1.2], 0) + ce([0.0, 1.6], 1)) / 2
    right_to_left = (ce([2.0, 0.0], 0) + ce([1.2, 1.6], 1)) / 2
    expected = 0.5 * (left_to_right + right_to_left)
    assert info_nce(left, right, tau).item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(shape=unit_batches, temperature=st.sampled_from([1.0, 0.1, 0.01]))
def test_info_nce_is_symmetric_in_its_arguments(shape, temperature):
    rows, dim, seed = shape
    a, b = _unit(rows, dim, seed), _unit(rows, dim, seed + 1)
    torch.testing.assert_close(info_nce(a, b, temperature), info_nce(b, a, temperature))


def test_info_nce_is_lower_for_aligned_than_for_shuffled_pairs():
    a = _unit(32, 16, 0)
    b = F.normalize(a + 0.1 * _unit(32, 16, 1), dim=1)
    shuffled = b.roll(1, dims=0)
    assert info_nce(a, b, 0.1) < info_nce(a, shuffled, 0.1)


def test_info_nce_scales_with_temperature_as_logits():
    a, b = _unit(8, 4, 0), _unit(8, 4, 1)
    # halving tau equals doubling the embeddings on one side
    torch.testing.assert_close(info_nce(a, b, 0.05), info_nce(2 * a, b, 0.1))


# -- intra -----------------------------------------------------------------------------------------
def test_intra_alignment_squared_is_hand_computed():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pseudo = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # squared distances 2 and 0: mean 1
    assert intra_alignment(queries, pseudo, squared=True).item() == pytest.approx(1.0)


def test_intra_alignment_unsquared_is_hand_computed():
    queries = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    pseudo = torch.tensor([[0.0, 1.0], [0.6, 0.8], [0.0, -1.0]])
    # distances sqrt(2), 0, 2: mean (sqrt(2) + 2) / 3
    value = intra_alignment(queries, pseudo, squared=False).item()
    assert value == pytest.approx((math.sqrt(2) + 2) / 3, abs=1e-6)


def test_intra_alignment_is_zero_for_identical_rows():
    x = _unit(5, 3, 0)
    assert intra_alignment(x, x).item() == 0.0


def test_intra_alignment_unsquared_has_finite_gradient_at_zero_distance():
    x = _unit(4, 3, 0).requires_grad_()
    intra_alignment(x, x.detach(), squared=False).backward()
    assert torch.isfinite(x.grad).all()


# -- cmcr_loss -------------------------------------------------------------------------------------
def _batch(seed: int = 0, rows: int = 16, dim: int = 8):
    return tuple(_unit(rows, dim, seed + i) for i in range(4))


def test_total_is_inter_query_plus_inter_pseudo_plus_lambda_intra():
    qa, qb, pa, pb = _batch()
    config = MethodConfig(temperature=0.1, intra_weight=0.3)
    terms = cmcr_loss(qa, qb, pa, pb, config)
    torch.testing.assert_close(terms.inter_query, info_nce(qa, qb, 0.1))
    torch.testing.assert_close(terms.inter_pseudo, info_nce(pa, pb, 0.1))
    torch.testing.assert_close(terms.intra,
                               0.5 * (intra_alignment(qa, pa) + intra_alignment(qb, pb)))
    torch.testing.assert_close(terms.total,
                               terms.inter_query + terms.inter_pseudo + 0.3 * terms.intra)


def test_intra_is_the_reports_one_over_2b_sum():
    """L_intra = 1/(2B) sum_i (|f(t_i) - f(v_i)|^2 + |g(t_i) - g(a_i)|^2), written out."""
    qa, qb, pa, pb = _batch(rows=4)
    terms = cmcr_loss(qa, qb, pa, pb, MethodConfig())
    by_hand = sum(float(((qa[i] - pa[i]) ** 2).sum() + ((qb[i] - pb[i]) ** 2).sum())
                  for i in range(4)) / (2 * 4)
    assert terms.intra.item() == pytest.approx(by_hand, rel=1e-6)


def test_the_pseudo_pair_has_its_own_temperature_defaulting_to_the_text_pairs():
    qa, qb, pa, pb = _batch()
    same = cmcr_loss(qa, qb, pa, pb, MethodConfig(temperature=0.1))
    torch.testing.assert_close(same.inter_pseudo, info_nce(pa, pb, 0.1))
    own = cmcr_loss(qa, qb, pa, pb, MethodConfig(temperature=0.1, pseudo_temperature=0.5))
    torch.testing.assert_close(own.inter_pseudo, info_nce(pa, pb, 0.5))
    torch.testing.assert_close(own.inter_query, info_nce(qa, qb, 0.1))


def test_intra_term_follows_intra_squared():
    qa, qb, pa, pb = _batch()
    terms = cmcr_loss(qa, qb, pa, pb, MethodConfig(intra_squared=False))
    expected = 0.5 * (intra_alignment(qa, pa, False) + intra_alignment(qb, pb, False))
    torch.testing.assert_close(terms.intra, expected)


def test_use_pseudo_inter_false_removes_the_pseudo_pair_term():
    qa, qb, pa, pb = _batch()
    config = MethodConfig(use_pseudo_inter=False)
    terms = cmcr_loss(qa, qb, pa, pb, config)
    assert terms.inter_pseudo.item() == 0.0
    assert terms.intra.item() > 0
    torch.testing.assert_close(terms.total, terms.inter_query + config.intra_weight * terms.intra)


def test_use_intra_false_removes_the_intra_term():
    qa, qb, pa, pb = _batch()
    terms = cmcr_loss(qa, qb, pa, pb, MethodConfig(use_intra=False))
    assert terms.intra.item() == 0.0
    torch.testing.assert_close(terms.total, terms.inter_query + terms.inter_pseudo)


@pytest.mark.parametrize("missing", ["a", "b", "both"])
def test_missing_pseudo_pairs_leave_only_the_query_term(missing):
    qa, qb, pa, pb = _batch()
    pa = None if missing in ("a", "both") else pa
    pb = None if missing in ("b", "both") else pb
    terms = cmcr_loss(qa, qb, pa, pb, MethodConfig())
    assert terms.inter_pseudo.item() == 0.0 and terms.intra.item() == 0.0
    torch.testing.assert_close(terms.total, info_nce(qa, qb, MethodConfig().temperature))


def test_loss_gradient_reaches_every_input():
    tensors = [t.clone().requires_grad_() for t in _batch()]
    cmcr_loss(*tensors, MethodConfig(temperature=0.1)).total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors)


def test_as_floats_reports_every_term():
    terms = cmcr_loss(*_batch(), MethodConfig())
    floats = terms.as_floats()
    assert set(floats) == {"total", "inter_query", "inter_pseudo", "intra"}
    assert all(isinstance(v, float) for v in floats.values())


@settings(max_examples=25, deadline=None)
@given(shape=unit_batches, temperature=st.sampled_from([1.0, 0.1, 0.01]),
       weight=st.floats(0.0, 10.0), squared=st.booleans())
def test_all_loss_terms_are_finite_and_non_negative(shape, temperature, weight, squared):
    rows, dim, seed = shape
    qa, qb, pa, pb = _batch(seed, rows, dim)
    config = MethodConfig(temperature=temperature, intra_weight=weight, intra_squared=squared)
    for name, value in cmcr_loss(qa, qb, pa, pb, config).as_floats().items():
        assert math.isfinite(value), name
        assert value >= 0, name
