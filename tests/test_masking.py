"""Doc weights -> additive attention bias: DMA equals multiply-and-renormalise."""

from __future__ import annotations

import pytest
import torch

from gumbel_rerank.masking import blocked, key_bias, log_weights


def test_log_bias_equals_multiply_and_renormalise() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, dtype=torch.float64, generator=g)
    key_doc = torch.tensor([-1, 0, 0, 1, 1, 2])
    w = torch.tensor([[[0.3, 0.0, 1.0]]], dtype=torch.float64)
    bias = key_bias(log_weights(w), key_doc[None], torch.ones(1, 6, dtype=torch.bool))[0, 0]
    ours = torch.softmax(logits + bias, -1)
    scale = torch.cat([torch.ones(1, dtype=torch.float64), w[0, 0][key_doc[1:]]])
    expected = scale * logits.exp() / (scale * logits.exp()).sum()
    torch.testing.assert_close(ours, expected, atol=1e-300, rtol=1e-12)


def test_bias_is_finite_padding_blocked_and_gradients_finite() -> None:
    w = torch.tensor([[[0.0, 1e-45, 1.0]]], requires_grad=True)
    bias = key_bias(log_weights(w), torch.tensor([[0, 1, 2, 2]]), torch.tensor([[True, True, True, False]]))
    assert torch.isfinite(bias).all()
    assert bias[0, 0, 3] == blocked(torch.float32)
    bias[..., :3].sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_negative_weights_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        log_weights(torch.tensor([-0.1]))
