"""Properties of the relaxed top-k family."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gumbel_rerank.topk import (
    gumbel_noise,
    hard_topk,
    relaxed_topk,
    relaxed_topk_from_noise,
    standardize,
    straight_through,
    straight_through_topk,
    subset_topk,
    subset_topk_from_noise,
    threshold_topk,
    threshold_topk_from_noise,
)

scores_st = st.integers(1, 12).flatmap(lambda n: st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=n, max_size=n))
common = settings(max_examples=60, deadline=None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@common
@given(scores_st, st.integers(1, 6), st.floats(0.05, 5.0), st.floats(0.1, 3.0), st.integers(0, 2**31))
def test_relaxed_topk_bounds_and_row_sums(values: list[float], k: int, tau: float, kappa: float, seed: int) -> None:
    w = torch.tensor([values, values[::-1]], dtype=torch.float64)
    m = relaxed_topk(w, k=k, tau=tau, kappa=kappa, generator=gen(seed))
    assert m.shape == w.shape
    assert (m >= 0).all() and (m <= 1 + 1e-12).all()
    rows = m.sum(-1)
    assert (rows >= 1 - 1e-9).all() and (rows <= min(k, w.shape[-1]) + 1e-9).all()


@common
@given(scores_st, st.integers(1, 6), st.integers(0, 2**31))
def test_relaxed_topk_tau_to_zero_is_union_of_argmaxes(values: list[float], k: int, seed: int) -> None:
    w = torch.tensor(values, dtype=torch.float64)
    noise = gumbel_noise((k, len(values)), generator=gen(seed), dtype=torch.float64)
    perturbed = w + noise  # (k, N)
    top2 = perturbed.topk(min(2, len(values)), dim=-1).values
    if len(values) > 1 and (top2[:, 0] - top2[:, 1]).min() < 1e-3:
        return  # a near tie: the limit is not binary at this tau
    m = relaxed_topk_from_noise(w, noise, tau=1e-6)
    expected = torch.zeros_like(w).scatter(0, perturbed.argmax(-1), 1.0)
    torch.testing.assert_close(m, expected, atol=1e-6, rtol=0)
    assert 1 <= m.round().sum() <= k


@common
@given(scores_st, st.integers(1, 6), st.floats(0.05, 5.0), st.integers(0, 2**31))
def test_subset_topk_rows_sum_to_k_and_limit_is_gumbel_topk(values: list[float], k: int, tau: float, seed: int) -> None:
    w = torch.tensor(values, dtype=torch.float64)
    kk = min(k, len(values))
    noise = gumbel_noise((len(values),), generator=gen(seed), dtype=torch.float64)
    m = subset_topk_from_noise(w, noise, k=k, tau=tau)
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(), torch.tensor(float(kk), dtype=torch.float64), atol=1e-6, rtol=0)
    # tau -> 0: exactly the k distinct top docs of the perturbed scores (Gumbel-top-k).
    perturbed = (w + noise).sort(descending=True).values
    if len(values) > kk and (perturbed[kk - 1] - perturbed[kk]) < 1e-2:
        return
    if kk > 1 and (perturbed[:kk].diff().abs().min()) < 1e-2:
        return
    cold = subset_topk_from_noise(w, noise, k=k, tau=1e-4)
    torch.testing.assert_close(cold, hard_topk(w + noise, k=k), atol=1e-4, rtol=0)


def test_subset_topk_entries_can_exceed_one_documented() -> None:
    """Unlike L2X, single entries are not bounded by 1 at moderate tau (documented property)."""
    m = subset_topk_from_noise(torch.tensor([2.0, 0.0]), torch.zeros(2), k=2, tau=1.0)
    assert m[0] > 1.0
    torch.testing.assert_close(m.sum(), torch.tensor(2.0))


@common
@given(scores_st, st.integers(1, 14))
def test_hard_topk_exactly_k_ones_on_the_best(values: list[float], k: int) -> None:
    w = torch.tensor(values)
    m = hard_topk(w, k=k)
    kk = min(k, len(values))
    assert set(m.unique().tolist()) <= {0.0, 1.0} and m.sum() == kk
    assert w[m.bool()].min() >= w[~m.bool()].max() if kk < len(values) else True


def test_hard_topk_ties_go_to_lower_index() -> None:
    assert hard_topk(torch.tensor([1.0, 3.0, 1.0, 1.0]), k=2).tolist() == [1.0, 1.0, 0.0, 0.0]


@common
@given(scores_st, st.integers(1, 6), st.integers(0, 2**31))
def test_straight_through_forward_is_hard_backward_is_soft(values: list[float], k: int, seed: int) -> None:
    w = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    m = straight_through_topk(w, k=k, tau=0.5, generator=gen(seed))
    torch.testing.assert_close(m.detach().round(), m.detach(), atol=1e-12, rtol=0)
    assert m.detach().round().sum() == min(k, len(values))
    upstream = torch.linspace(-1, 1, len(values), dtype=torch.float64)
    (g,) = torch.autograd.grad((m * upstream).sum(), w)
    w2 = w.detach().clone().requires_grad_(True)
    soft = relaxed_topk(w2, k=k, tau=0.5, generator=gen(seed))
    (g_soft,) = torch.autograd.grad((soft * upstream).sum(), w2)
    torch.testing.assert_close(g, g_soft)


def test_gumbel_max_identity_at_k1() -> None:
    """Selection frequencies of the k=1 relaxation at low tau match softmax(kappa * w)."""
    w = torch.tensor([1.0, 0.0, -0.5, 2.0, 0.3])
    kappa = 0.8
    draws = 40_000
    m = relaxed_topk(w.expand(draws, -1), k=1, tau=1e-3, kappa=kappa, generator=gen(7))
    freq = torch.bincount(m.argmax(-1), minlength=5).float() / draws
    torch.testing.assert_close(freq, torch.softmax(kappa * w, -1), atol=0.01, rtol=0)


def test_gradcheck_noise_free_paths_float64() -> None:
    w = torch.randn(2, 5, dtype=torch.float64, generator=gen(0), requires_grad=True)
    noise = gumbel_noise((3, 2, 5), generator=gen(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: relaxed_topk_from_noise(x, torch.zeros_like(noise), tau=0.7, kappa=1.3), (w,))
    assert torch.autograd.gradcheck(lambda x: relaxed_topk_from_noise(x, noise, tau=0.7, kappa=1.3), (w,))
    assert torch.autograd.gradcheck(lambda x: subset_topk_from_noise(x, noise[0], k=3, tau=0.7), (w,))


def test_extreme_scores_and_tiny_tau_stay_finite() -> None:
    w = torch.tensor([[1e4, -1e4, 0.0, 1e4 - 1, -1e4 + 3]], requires_grad=True)
    for fn in (relaxed_topk, straight_through_topk, subset_topk, threshold_topk):
        for tau in (1e-3, 0.5, 10.0):
            m = fn(w, k=2, tau=tau, kappa=1.0, generator=gen(3))
            (g,) = torch.autograd.grad((m * torch.arange(5.0)).sum(), w)
            assert torch.isfinite(m).all() and torch.isfinite(g).all(), (fn.__name__, tau)


def test_equal_seeds_give_bit_identical_masks() -> None:
    w = torch.randn(4, 9, generator=gen(0))
    for fn in (relaxed_topk, straight_through_topk, subset_topk, threshold_topk):
        a = fn(w, k=3, tau=0.5, kappa=1.0, generator=gen(42))
        b = fn(w, k=3, tau=0.5, kappa=1.0, generator=gen(42))
        c = fn(w, k=3, tau=0.5, kappa=1.0, generator=gen(43))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_arguments_fail_loudly() -> None:
    import pytest

    with pytest.raises(ValueError, match="k must be"):
        relaxed_topk(torch.zeros(3), k=0, tau=1.0, generator=None)
    with pytest.raises(ValueError, match="tau must be"):
        relaxed_topk(torch.zeros(3), k=1, tau=0.0, generator=None)
    with pytest.raises(ValueError, match="at least one doc"):
        hard_topk(torch.zeros(2, 0), k=1)


# ---- the calibrated mask: threshold relaxation and standardised scores ---------------------------


@common
@given(scores_st, st.integers(1, 6), st.floats(0.05, 5.0), st.floats(0.1, 3.0), st.integers(0, 2**31))
def test_threshold_topk_entries_in_unit_interval_rows_sum_to_k(
    values: list[float], k: int, tau: float, kappa: float, seed: int
) -> None:
    w = torch.tensor([values, values[::-1]], dtype=torch.float64)
    m = threshold_topk(w, k=k, tau=tau, kappa=kappa, generator=gen(seed))
    assert (m >= 0).all() and (m <= 1).all()
    expected = torch.full((2,), float(min(k, len(values))), dtype=torch.float64)
    torch.testing.assert_close(m.sum(-1), expected, atol=1e-6, rtol=0)


@common
@given(scores_st, st.integers(1, 6), st.integers(0, 2**31))
def test_threshold_topk_tau_to_zero_is_the_hard_topk_of_the_perturbed_scores(values: list[float], k: int, seed: int) -> None:
    w = torch.tensor(values, dtype=torch.float64)
    noise = gumbel_noise((len(values),), generator=gen(seed), dtype=torch.float64)
    kk = min(k, len(values))
    ordered = (w + noise).sort(descending=True).values
    if len(values) > kk and ordered[kk - 1] - ordered[kk] < 1e-2:
        return  # a near tie at the boundary: not binary at this tau
    cold = threshold_topk_from_noise(w, noise, k=k, tau=1e-4)
    torch.testing.assert_close(cold, hard_topk(w + noise, k=k), atol=1e-6, rtol=0)


def test_threshold_topk_gradcheck_float64_and_valid_slots() -> None:
    w = torch.randn(3, 6, dtype=torch.float64, generator=gen(0), requires_grad=True)
    noise = gumbel_noise((3, 6), generator=gen(1), dtype=torch.float64)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    assert torch.autograd.gradcheck(lambda x: threshold_topk_from_noise(x, noise, k=3, tau=0.6, kappa=1.2, valid=valid), (w,))
    m = threshold_topk_from_noise(w, noise, k=3, tau=0.6, valid=valid)
    assert (m[~valid] == 0).all()
    torch.testing.assert_close(m.sum(-1)[:2], torch.tensor([3.0, 3.0], dtype=torch.float64))
    assert torch.equal(m[2], valid[2].double())  # fewer valid docs than k: keep them all


def test_standardize_makes_the_mask_scale_and_shift_free() -> None:
    """The same ranking at any score scale gives the same calibrated mask (what kappa alone cannot)."""
    w = torch.randn(2, 8, dtype=torch.float64, generator=gen(3))
    valid = torch.ones(2, 8, dtype=torch.bool)
    noise = gumbel_noise((2, 8), generator=gen(4), dtype=torch.float64)
    masks = [
        threshold_topk_from_noise(standardize(w * a + b, valid), noise, k=4, tau=0.5)
        for a, b in ((1.0, 0.0), (20.0, 3.0), (0.01, -1.0))
    ]
    for m in masks[1:]:
        torch.testing.assert_close(m, masks[0])
    z = standardize(w, valid)
    torch.testing.assert_close(z.mean(-1), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.pow(2).mean(-1), torch.ones(2, dtype=torch.float64), atol=1e-9, rtol=0)
    part = standardize(w, torch.arange(8).expand(2, 8) < 5)
    assert (part[:, 5:] == 0).all() and torch.isfinite(standardize(torch.zeros(1, 3), torch.ones(1, 3).bool())).all()
    assert torch.autograd.gradcheck(lambda x: standardize(x, valid), (w.clone().requires_grad_(True),))


def test_straight_through_keeps_a_gradient_for_unselected_docs() -> None:
    """Forward: 1 at the kept docs and a floor that log_weights does not clamp; backward: the soft gradient."""
    from gumbel_rerank.masking import log_weights

    soft = torch.tensor([0.9, 0.7, 0.2, 0.05], dtype=torch.float32, requires_grad=True)
    st_mask = straight_through(soft, k=2)
    assert torch.equal(st_mask.detach() > 0.5, torch.tensor([True, True, False, False]))
    assert st_mask.detach()[2:].max() < 1e-15  # removed to float precision
    (g,) = torch.autograd.grad(log_weights(st_mask).sum(), soft)
    assert (g[2:] != 0).all() and torch.isfinite(g).all()  # the clamp at `tiny` would give exactly 0 here
