"""Doc weights -> additive attention biases (Differentiable Masked Attention).

Multiplying the attention a query gives to every token of doc i by M_i and renormalising equals
adding ``log M_i`` to the attention logits of doc i's keys (docs/method.md, step 5). The bias is
clamped to a finite floor, never -inf, so a zero weight removes the doc (its probability mass
underflows to zero) while softmax and gradients stay finite.
"""

from __future__ import annotations

import torch


def blocked(dtype: torch.dtype) -> float:
    """The additive bias for keys nobody may see (padding, the future): a large finite negative."""
    return torch.finfo(dtype).min / 2


def log_weights(weights: torch.Tensor) -> torch.Tensor:
    """``log(w)`` with w clamped to the dtype's smallest normal number (log 0 -> about -87 in fp32).

    Clamping cuts the gradient for w below the floor, which is only reached by weights that are
    already zero to float precision.
    """
    if weights.device.type != "meta" and torch.any(weights < 0):  # meta: shapes only (the device-seam tests)
        raise ValueError("doc weights must be non-negative")
    return torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))


def key_bias(log_w: torch.Tensor, key_doc: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Per-key additive bias from per-doc log-weights.

    Args:
        log_w: (B, M, N) log doc weights.
        key_doc: (B, S) index of the doc each key belongs to, -1 for keys outside any doc.
        key_valid: (B, S) False for padding keys.

    Returns:
        (B, M, S) bias: log w of the key's doc, 0 outside docs, ``blocked`` at padding.
    """
    B, M, _ = log_w.shape
    idx = key_doc.clamp_min(0).unsqueeze(1).expand(B, M, -1)  # (B, M, S)
    bias = torch.gather(log_w, 2, idx)
    bias = torch.where((key_doc >= 0).unsqueeze(1), bias, torch.zeros_like(bias))
    return torch.where(key_valid.unsqueeze(1), bias, torch.full_like(bias, blocked(log_w.dtype)))


def causal_block(q_pos: torch.Tensor, k_pos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(…, Q, S) additive mask: 0 where key index <= query index along the sequence, else blocked."""
    allowed = k_pos.unsqueeze(-2) <= q_pos.unsqueeze(-1)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, blocked(dtype))


def padding_bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(…, S) additive mask: 0 at real keys, blocked at padding."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, blocked(dtype))
