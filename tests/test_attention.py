"""The grouped attention kernel of the masked answer pass (gumbel_rerank/readers/attention.py).

It replaces transformers' ``sdpa`` in the decoder readers' answer pass on the CPU when a gradient is
needed, so it must compute exactly what ``sdpa`` computes: the same outputs and gradients, for every
mask form transformers can hand it. The layout parities of tests/test_readers.py ("masked equals
removed") run through it too, since they run with gradients enabled on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama, tiny_qwen2

import gumbel_rerank.readers.decoder as decoder
from gumbel_rerank.readers import make_reader
from gumbel_rerank.readers.attention import GROUPED, answer_kernel, attention_kernel, grouped_attention


class _Module(torch.nn.Module):
    pass


def _inputs(dtype: torch.dtype = torch.float64, heads: int = 6, kv_heads: int = 2, q: int = 5, s: int = 9):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(2, heads, q, 4, generator=g, dtype=dtype)
    key = torch.randn(2, kv_heads, s, 4, generator=g, dtype=dtype)
    value = torch.randn(2, kv_heads, s, 4, generator=g, dtype=dtype)
    return query, key, value


def _reference(query, key, value, mask):  # type: ignore[no-untyped-def]
    groups = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1), attn_mask=mask
    )
    return out.transpose(1, 2)


@pytest.mark.parametrize("form", ["float-shared", "float-per-head", "bool", "none"])
def test_grouped_equals_sdpa_for_every_mask_form(form: str) -> None:
    query, key, value = _inputs()
    g = torch.Generator().manual_seed(1)
    heads_dim = query.shape[1] if form == "float-per-head" else 1
    mask = None
    if form.startswith("float"):
        mask = torch.randn(2, heads_dim, 5, 9, generator=g, dtype=torch.float64)
        mask[..., 3] = torch.finfo(torch.float64).min  # a removed key
    elif form == "bool":
        mask = torch.rand(2, 1, 5, 9, generator=g) > 0.3
        mask[..., 0] = True  # every row keeps a key
    ours, weights = grouped_attention(_Module().eval(), query, key, value, mask)
    assert weights is None
    torch.testing.assert_close(ours, _reference(query, key, value, mask), atol=1e-12, rtol=0)


def test_grouped_gradients_in_float64() -> None:
    """gradcheck: the gradient reaches the queries and the float mask (the doc weights) exactly."""
    query, key, value = _inputs(q=3, s=6)
    mask = torch.randn(2, 1, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    query.requires_grad_(True)
    mask.requires_grad_(True)

    def fn(q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return grouped_attention(_Module().eval(), q, key, value, m)[0]

    assert torch.autograd.gradcheck(fn, (query, mask))


def test_grouped_refuses_attention_dropout_in_training_mode() -> None:
    query, key, value = _inputs()
    with pytest.raises(ValueError, match="dropout"):
        grouped_attention(_Module().train(), query, key, value, None, dropout=0.1)


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2], ids=["llama", "qwen2"])
def test_answer_pass_under_grouped_equals_sdpa_values_and_gradients(layout: str, build, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reader = make_reader(layout, build(), byte_tokenizer("decoder"))
    examples = make_examples()
    ctx = reader.prepare(examples)
    raw = torch.rand(len(examples), 2, 4, generator=torch.Generator().manual_seed(3))

    def run(kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
        monkeypatch.setattr(decoder, "answer_kernel", lambda model: kernel)
        w = raw.clone().requires_grad_(True)
        lp = reader.answer_logprob(ctx, w).mean()
        (-lp.sum()).backward()
        assert w.grad is not None
        return lp.detach(), w.grad

    (lp_grouped, grad_grouped), (lp_sdpa, grad_sdpa) = run(GROUPED), run("sdpa")
    torch.testing.assert_close(lp_grouped, lp_sdpa, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_grouped, grad_sdpa, atol=1e-5, rtol=0)
    assert grad_grouped.abs().sum() > 0
    assert reader.model.config._attn_implementation == "sdpa"  # switched for the pass only


def test_grouped_only_where_it_was_measured_faster() -> None:
    """CPU and a gradient: grouped; without a gradient, or another kernel chosen, the model's own."""
    model = tiny_llama()
    assert model.config._attn_implementation == "sdpa"
    assert answer_kernel(model) == GROUPED
    with torch.no_grad():
        assert answer_kernel(model) == "sdpa"
    with attention_kernel(model, "eager"):
        assert answer_kernel(model) == "eager"
    assert model.config._attn_implementation == "sdpa"
