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
"""

from __future__ import annotations

import torch

# Keeps u away from 0 and 1 so that -log(-log u) is finite in float32.
_UNIFORM_EPS = 1e-10


def gumbel_noise(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log u)``, ``u ~ U(0, 1)``, drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
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


def straight_through(soft: torch.Tensor, *, k: int) -> torch.Tensor:
    """Forward: the hard top-k of a soft mask; backward: the soft mask's gradient."""
    return hard_topk(soft, k=k) + soft - soft.detach()


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
    _check(scores, k, tau)
    noise = gumbel_noise(scores.shape, generator=generator, dtype=scores.dtype, device=scores.device)
    return subset_topk_from_noise(scores, noise, k=k, tau=tau, kappa=kappa)


RELAXATIONS = {"l2x": relaxed_topk, "subset": subset_topk}
