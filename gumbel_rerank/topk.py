"""The relaxed top-k family: turning reranker scores into (soft) document masks.

All functions are pure: randomness comes only from an explicit ``torch.Generator``, scores have
shape (..., N) and masks come back with the same shape.

* :func:`relaxed_topk` is the paper's relaxation (L2X, Chen et al. 2018): k independent
  Gumbel-softmax draws over ``kappa * w + G`` at temperature ``tau``, combined by element-wise max.
  Entries lie in [0, 1]; a row sums to a value in [1, k]; as ``tau -> 0`` the mask becomes binary
  with at most k ones (two draws may pick the same doc).
* :func:`hard_topk` is the inference mask: exactly ``min(k, N)`` ones, ties to the lower index.
* :func:`straight_through_topk` returns the hard top-k of the relaxed mask in the forward pass and
  the relaxed mask's gradient in the backward pass, aimed at the soft-train / hard-inference gap.
* :func:`subset_topk` is a without-replacement relaxation (successive softmax, Xie & Ermon 2019):
  one Gumbel draw, then k softmaxes, each after suppressing the mass already taken. A row sums to
  exactly k (for k <= N) but single entries may exceed 1 at moderate ``tau``; as ``tau -> 0`` it
  becomes the hard top-k of the perturbed scores (the Gumbel-top-k trick: k distinct docs).
* :func:`threshold_topk` (the default of G-Rerank here) perturbs the scores with one Gumbel draw and
  projects them onto the k-subset polytope with a binary-entropy regulariser (the LML layer, Amos et
  al. 2019): ``m_i = sigmoid((kappa * w_i + G_i) / tau + nu)`` with nu set so that the row sums to
  exactly k. Entries stay in (0, 1); as ``tau -> 0`` it becomes the hard top-k of the perturbed
  scores (k distinct docs), so training and inference keep the same number of docs.
* :func:`standardize` makes every relaxation scale-free: each question's scores are z-scored over
  its valid docs before the Gumbel step, so kappa is measured in units of the scores' spread.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Keeps u away from 0 and 1 so that -log(-log u) is finite in float32.
_UNIFORM_EPS = 1e-10


def gumbel_noise(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    antithetic: bool = False,
) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)``, ``u ~ U(0, 1)``, drawn from ``generator``.

    ``antithetic``: in pairs along the first axis (even length 2m), rows ``m + i`` are
    ``-log(-log(1 - u))`` for the ``u`` of row ``i``. Each row is still standard Gumbel; a pair is
    negatively correlated, so the mean of a function over a pair can vary less than over two
    independent draws."""
    if not antithetic:
        return _to_gumbel(torch.rand(shape, generator=generator, dtype=dtype, device=device))
    if len(shape) == 0 or shape[0] % 2:
        raise ValueError(f"antithetic noise needs an even first axis, got shape {tuple(shape)}")
    u = torch.rand((shape[0] // 2, *shape[1:]), generator=generator, dtype=dtype, device=device)
    return _to_gumbel(torch.cat([u, 1.0 - u]))


def _to_gumbel(u: torch.Tensor) -> torch.Tensor:
    u = u.clamp(_UNIFORM_EPS, 1.0 - _UNIFORM_EPS)
    return -torch.log(-torch.log(u))


def _check(scores: torch.Tensor, k: int, tau: float) -> None:
    if scores.ndim < 1 or scores.shape[-1] == 0:
        raise ValueError(f"scores must have at least one doc on the last axis, got shape {tuple(scores.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def relaxed_topk_from_noise(scores: torch.Tensor, noise: torch.Tensor, *, tau: float, kappa: float = 1.0) -> torch.Tensor:
    """The L2X relaxed top-k for given noise: deterministic and differentiable in ``scores``.

    Args:
        scores: (..., N) reranker scores w.
        noise: (k, ..., N) one Gumbel draw per selection (zeros give the noise-free path).
        tau: softmax temperature.
        kappa: scale of the scores against unit-scale noise (small = explore).

    Returns:
        (..., N) soft mask ``max_j softmax((kappa * w + G_j) / tau)``.
    """
    _check(scores, noise.shape[0], tau)
    draws = torch.softmax((kappa * scores.unsqueeze(0) + noise) / tau, dim=-1)  # (k, ..., N)
    return draws.amax(dim=0)


def relaxed_topk(
    scores: torch.Tensor, *, k: int, tau: float, kappa: float = 1.0, generator: torch.Generator | None
) -> torch.Tensor:
    """The paper's relaxed top-k: k Gumbel-softmax draws combined by element-wise max.

    Args:
        scores: (..., N) reranker scores.
        k: number of draws (docs to keep).
        tau: temperature; tau -> 0 gives a binary mask.
        kappa: score scale against the unit Gumbel noise.
        generator: source of the noise.

    Returns:
        (..., N) mask in [0, 1] whose rows sum to a value in [1, k].
    """
    _check(scores, k, tau)
    noise = gumbel_noise((k, *scores.shape), generator=generator, dtype=scores.dtype, device=scores.device)
    return relaxed_topk_from_noise(scores, noise, tau=tau, kappa=kappa)


def hard_topk(scores: torch.Tensor, *, k: int) -> torch.Tensor:
    """Binary mask with ones at the ``min(k, N)`` highest scores; ties go to the lower index."""
    _check(scores, k, 1.0)
    k = min(k, scores.shape[-1])
    order = torch.sort(scores.detach(), dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(scores).scatter(-1, order, 1.0)


def straight_through_topk(
    scores: torch.Tensor, *, k: int, tau: float, kappa: float = 1.0, generator: torch.Generator | None
) -> torch.Tensor:
    """Hard top-k of the relaxed mask forward, the relaxed mask's gradient backward.

    The forward value is binary with exactly ``min(k, N)`` ones (the docs holding the most mass in
    the relaxed mask), so training sees the same kind of input as inference.
    """
    return straight_through(relaxed_topk(scores, k=k, tau=tau, kappa=kappa, generator=generator), k=k)


# The weight an unselected doc gets in a straight-through forward pass: removed to float precision
# (its keys get log(1e-20) = -46 added, a share of attention below 1e-11 even for a key 20 logits
# above the rest), yet far above the clamp of masking.log_weights, so its gradient is not cut.
ST_FLOOR = 1e-20


def straight_through(soft: torch.Tensor, *, k: int) -> torch.Tensor:
    """Forward: the hard top-k of a soft mask; backward: the soft mask's gradient.

    An exact zero would be clamped by :func:`gumbel_rerank.masking.log_weights`, and the clamp cuts
    the gradient, so unselected docs would learn nothing. They get :data:`ST_FLOOR` instead: the
    derivative of the loss with respect to their weight at that point is the derivative of
    "adding a little of doc i" (finite, and what a finite difference measures), and it reaches the
    soft mask, hence the scores, unchanged.
    """
    hard = hard_topk(soft, k=k).clamp_min(ST_FLOOR)
    return hard + (soft - soft.detach())  # the bracket first: floor + soft - soft would round the floor away


def subset_topk_from_noise(scores: torch.Tensor, noise: torch.Tensor, *, k: int, tau: float, kappa: float = 1.0) -> torch.Tensor:
    """Without-replacement relaxation (successive softmax) for one given noise draw.

    Args:
        scores: (..., N) reranker scores.
        noise: (..., N) a single Gumbel draw shared by the k steps.
        k: docs to keep; clipped to N.
        tau: temperature.
        kappa: score scale against the noise.

    Returns:
        (..., N) non-negative mask whose rows sum to ``min(k, N)``.
    """
    _check(scores, k, tau)
    k = min(k, scores.shape[-1])
    logits = kappa * scores + noise
    tiny = torch.finfo(scores.dtype).tiny
    mask = torch.zeros_like(scores)
    step = torch.zeros_like(scores)
    for _ in range(k):
        # Suppress what the previous step took: log(1 - p) in logit space, as Xie & Ermon (2019).
        logits = logits + torch.log((1.0 - step).clamp_min(tiny))
        step = torch.softmax(logits / tau, dim=-1)
        mask = mask + step
    return mask


def subset_topk(
    scores: torch.Tensor, *, k: int, tau: float, kappa: float = 1.0, generator: torch.Generator | None
) -> torch.Tensor:
    """Without-replacement relaxed top-k with fresh noise; see :func:`subset_topk_from_noise`."""
    return _one_fresh_draw(subset_topk_from_noise, scores, k=k, tau=tau, kappa=kappa, generator=generator)


def _one_fresh_draw(
    from_noise: Callable[..., torch.Tensor],
    scores: torch.Tensor,
    *,
    k: int,
    tau: float,
    kappa: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``from_noise(scores, G, ...)`` with one fresh Gumbel draw G shaped like the scores."""
    _check(scores, k, tau)
    noise = gumbel_noise(scores.shape, generator=generator, dtype=scores.dtype, device=scores.device)
    return from_noise(scores, noise, k=k, tau=tau, kappa=kappa)


def _threshold_offset(x: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """(..., 1) nu with sum_i sigmoid(x_i + nu) = k, by bisection (no gradient)."""
    x = x.detach()
    finite = x > torch.finfo(x.dtype).min / 4  # MISSING-like slots take no part in the bounds
    top = torch.where(finite, x, torch.full_like(x, -torch.inf)).amax(-1, keepdim=True)
    low = torch.where(finite, x, torch.full_like(x, torch.inf)).amin(-1, keepdim=True)
    lo, hi = -top - 50.0, -low + 50.0  # sum(lo) ~ 0 < k <= n = sum(hi) (sigmoid(+-50) is 0/1 in fp32 and fp64)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = torch.sigmoid(x + mid).sum(-1, keepdim=True) < k
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def threshold_topk_from_noise(
    scores: torch.Tensor, noise: torch.Tensor, *, k: int, tau: float, kappa: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Perturbed scores projected onto {m in [0, 1]^N : sum m = k} with entropy (the LML layer).

    ``m = sigmoid(x + nu)``, ``x = (kappa * w + G) / tau``. nu is found by bisection without
    gradient, then refined by one Newton step that does carry the gradient: at the solution that
    step's derivative is the implicit-function gradient ``dnu/dx_j = -m_j(1-m_j) / sum_i m_i(1-m_i)``,
    so the backward pass is exact without differentiating through the bisection.

    Args:
        scores: (..., N) reranker scores.
        noise: (..., N) one Gumbel draw (zeros give the noise-free path).
        k: docs to keep; a question with at most k valid docs keeps all of them (weight 1).
        tau: temperature; tau -> 0 gives the hard top-k of ``kappa * w + G``.
        kappa: score scale against the noise.
        valid: (..., N) False at empty doc slots (weight 0); all True when omitted.

    Returns:
        (..., N) mask in [0, 1] whose rows sum to ``min(k, valid docs)``.
    """
    _check(scores, k, tau)
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    x = (kappa * scores + noise) / tau
    x = torch.where(valid, x, torch.full_like(x, torch.finfo(x.dtype).min / 2))
    n = valid.sum(-1, keepdim=True)
    iters = 60 if x.dtype == torch.float32 else 110  # bisection down to the dtype's resolution
    nu = _threshold_offset(x, k, iters)
    m0 = torch.sigmoid(x + nu)
    slope = (m0 * (1 - m0)).sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    nu = nu - (m0.sum(-1, keepdim=True) - k) / slope  # Newton step: carries the implicit gradient
    mask = torch.sigmoid(x + nu) * valid
    return torch.where(n <= k, valid.to(mask.dtype), mask)


def threshold_topk(
    scores: torch.Tensor, *, k: int, tau: float, kappa: float = 1.0, generator: torch.Generator | None
) -> torch.Tensor:
    """Gumbel-perturbed LML relaxed top-k with fresh noise; see :func:`threshold_topk_from_noise`."""
    return _one_fresh_draw(threshold_topk_from_noise, scores, k=k, tau=tau, kappa=kappa, generator=generator)


def standardize(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each row z-scored over its valid entries (0 elsewhere); differentiable in ``scores``.

    The Gumbel noise has a standard deviation of about 1.28 whatever the reranker, while a
    bi-encoder's cosine / 0.05 spans about +-12 and a fresh cross-encoder head about +-0.01.
    After this, ``kappa`` means "score spread in units of its own standard deviation" for every
    reranker. The gradient flows through the mean and the spread too, so the loss cannot be
    lowered by merely inflating the scores' scale (which would silently switch exploration off).
    A row with one valid doc, or with equal scores, comes back as zeros.
    """
    w = valid.to(scores.dtype)
    n = w.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (scores * w).sum(-1, keepdim=True) / n
    centred = (scores - mean) * w
    var = (centred**2).sum(-1, keepdim=True) / n
    # the floor keeps equal scores finite (and their gradient bounded) instead of 0 / 0
    return centred / torch.sqrt(var + 1e-12)


RELAXATIONS = {"l2x": relaxed_topk, "subset": subset_topk, "threshold": threshold_topk}
