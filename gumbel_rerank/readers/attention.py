"""Which attention kernel a reader pass runs, and the grouped kernel of the masked answer pass.

The question/answer pass of a decoder reader attends over every cached doc key through a float mask
that carries the doc weights (:func:`gumbel_rerank.masking.key_bias`), and the mask needs a gradient.
Under that mask transformers' ``sdpa`` first copies each key/value head once per query head it serves
(``repeat_kv``: SmolLM2-135M has 3 key/value heads for 9 query heads, so 3 copies of some 1,600
cached positions per layer), and PyTorch's CPU kernels fall back to their unfused "math" path,
which scales the copied keys too. :func:`grouped_attention` computes the same softmax attention
with the query heads of a key/value head stacked into one matrix product: no copies, the scale
applied to the few query rows. On the CPU it is what the answer pass runs
(:meth:`~gumbel_rerank.readers.decoder.DecoderReader.answer_logprob`); results agree with ``sdpa``
to float rounding (tests/test_attention.py). Measured in docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

GROUPED = "gumbel_rerank_grouped"


def grouped_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """softmax(q k^T * scaling + mask) v for (B, H, Q, D) queries over (B, H_kv, S, D) keys and values.

    The G = H / H_kv query heads that share a key/value head run as one (G * Q, D) x (D, S) product.
    ``attention_mask`` is added to the logits (float) or keeps the True positions (bool), broadcast
    over heads; the softmax runs in float32 (or float64), as transformers' eager kernel does. Returns the
    (B, Q, H, D) output that transformers' attention functions return, and no weights.
    """
    if dropout and module.training:
        raise ValueError("grouped_attention has no dropout; the frozen reader runs in eval mode")
    B, H, Q, D = query.shape
    kv_heads, S = key.shape[1], key.shape[2]
    groups = H // kv_heads
    scale = D**-0.5 if scaling is None else scaling
    q = (query * scale).reshape(B, kv_heads, groups * Q, D)
    logits = torch.matmul(q, key.transpose(2, 3)).view(B, kv_heads, groups, Q, S)
    if attention_mask is not None:
        mask = attention_mask[..., :S]  # (B or 1, 1 or H, Q, S), against logits (B, H_kv, G, Q, S)
        shared = mask.shape[1] == 1
        mask = mask.unsqueeze(1) if shared else mask.reshape(mask.shape[0], kv_heads, groups, Q, S)
        is_bool = mask.dtype == torch.bool
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min) if is_bool else logits + mask
    weights = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(value.dtype)
    out = torch.matmul(weights.view(B, kv_heads, groups * Q, S), value).view(B, H, Q, D)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED, grouped_attention)
AttentionMaskInterface.register(GROUPED, eager_mask)  # a float additive mask, where transformers builds one


@contextmanager
def attention_kernel(model: Any, name: str) -> Iterator[None]:
    """Run ``model`` with attention implementation ``name`` for the block; the previous one comes back."""
    old = model.config._attn_implementation
    if old != name:
        model.set_attn_implementation(name)
    try:
        yield
    finally:
        if old != name:
            model.set_attn_implementation(old)


def answer_kernel(model: Any) -> str:
    """The kernel of a masked answer pass: grouped where transformers would run ``sdpa`` on the CPU with
    a gradient (measured faster there); otherwise the model's own (without a gradient the CPU's fused
    ``sdpa`` kernel takes the float mask; on CUDA its fused kernels take it with a gradient too)."""
    current = model.config._attn_implementation
    on_cpu = next(model.parameters()).device.type == "cpu"
    return GROUPED if on_cpu and current == "sdpa" and torch.is_grad_enabled() else current
