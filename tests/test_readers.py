"""Differentiable masked attention inside real (tiny, random) HF readers.

Every layout is checked against the plain model used the ordinary way (no custom mask): all-ones
weights equal the plain model, a zero weight equals the doc physically removed, and gradients
reach the weights but never the reader.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama, tiny_qwen2, tiny_t5
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutput

from gumbel_rerank.data.schema import Example
from gumbel_rerank.readers import DecoderReader, make_reader
from gumbel_rerank.readers.base import cache_of, kv_cache
from gumbel_rerank.readers.fid import FiDReader

ATOL = 2e-5
DECODERS = {"llama": tiny_llama, "qwen2": tiny_qwen2}


def answer_lp(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def plain_sequential(reader: DecoderReader, ex: Example, keep: list[int]) -> torch.Tensor:
    """Docs not in ``keep`` physically removed; the rest stay at their original positions."""
    ids, pos, p = list(reader._prefix_ids()), [], 0
    pos = list(range(len(ids)))
    p = len(ids)
    for n, d in enumerate(reader._doc_ids(ex)):
        if n in keep:
            ids += d
            pos += list(range(p, p + len(d)))
        p += len(d)
    query, t = reader._query_ids(ex, True)
    ids += query
    pos += list(range(p, p + len(query)))
    out = reader.model(input_ids=torch.tensor([ids]), position_ids=torch.tensor([pos]))
    return answer_lp(out.logits[0, -t - 1 : -1], torch.tensor(ids[-t:]))


@torch.no_grad()
def plain_parallel(reader: DecoderReader, ex: Example, keep: list[int]) -> torch.Tensor:
    """Each kept doc run alone after the prefix; the question after the longest candidate doc."""
    prefix = reader._prefix_ids()
    docs = reader._doc_ids(ex)
    keys: list[list[torch.Tensor]] = []
    values: list[list[torch.Tensor]] = []
    for i, n in enumerate(keep):
        seq = torch.tensor([prefix + docs[n]])
        cache = cache_of(reader.model(input_ids=seq, **kv_cache(DynamicCache()), use_cache=True))
        for layer, (k, v, *_) in enumerate(cache):
            if i == 0:
                keys.append([k[:, :, : len(prefix)]])
                values.append([v[:, :, : len(prefix)]])
            keys[layer].append(k[:, :, len(prefix) :])
            values[layer].append(v[:, :, len(prefix) :])
    cache = DynamicCache(ddp_cache_data=[(torch.cat(k, 2), torch.cat(v, 2)) for k, v in zip(keys, values, strict=True)])
    query, t = reader._query_ids(ex, True)
    start = len(prefix) + max(len(d) for d in docs)
    out = reader.model(
        input_ids=torch.tensor([query]), position_ids=torch.arange(start, start + len(query))[None], **kv_cache(cache)
    )
    return answer_lp(out.logits[0, -t - 1 : -1], torch.tensor(query[-t:]))


@torch.no_grad()
def plain_fid(reader: FiDReader, ex: Example, keep: list[int]) -> torch.Tensor:
    states = []
    for n in keep:
        enc = reader.tokenizer([reader.doc_input(ex, n)], return_tensors="pt")
        states.append(reader.model.get_encoder()(**enc).last_hidden_state)
    hidden = torch.cat(states, 1)
    labels = reader.tokenizer(text_target=[ex.answers[0]], return_tensors="pt")["input_ids"]
    out = reader.model(
        encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
        attention_mask=torch.ones(hidden.shape[:2], dtype=torch.long),
        labels=labels,
    )
    return answer_lp(out.logits[0], labels[0])


def readers() -> list[tuple[str, object, object]]:
    out: list[tuple[str, object, object]] = []
    for name, build in DECODERS.items():
        for layout, ref in (("parallel", plain_parallel), ("sequential", plain_sequential)):
            out.append((f"{name}-{layout}", make_reader(layout, build(), byte_tokenizer("decoder")), ref))
    out.append(("t5-fid", FiDReader(tiny_t5(), byte_tokenizer("t5")), plain_fid))
    return out


READERS = readers()
IDS = [r[0] for r in READERS]


def ours(reader, examples: list[Example], weights: torch.Tensor):  # type: ignore[no-untyped-def]
    scores = reader.answer_logprob(reader.prepare(examples), weights)
    return scores.token_logprobs, scores.token_mask


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_all_ones_equals_plain_model(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    examples = make_examples()
    lp, mask = ours(reader, examples, torch.ones(len(examples), 1, 4))
    for b, ex in enumerate(examples):
        expected = ref(reader, ex, list(range(len(ex.docs))))
        torch.testing.assert_close(lp[b, 0][mask[b]], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_zero_weight_equals_doc_removed(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    examples = make_examples()
    # view 0 drops doc 0, view 1 drops doc 2, view 2 keeps only doc 1
    w = torch.ones(len(examples), 3, 4)
    w[:, 0, 0] = 0
    w[:, 1, 2] = 0
    w[:, 2] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    lp, mask = ours(reader, examples, w)
    for b, ex in enumerate(examples):
        n = len(ex.docs)
        for m, keep in enumerate(([1, 2, 3][: n - 1], [0, 1, 3][: n - 1] if n == 4 else [0, 1], [1])):
            expected = ref(reader, ex, keep)
            torch.testing.assert_close(lp[b, m][mask[b]], expected, atol=ATOL, rtol=0, msg=f"{name} b={b} view={m}")


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_masking_matters_and_is_not_a_no_op(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    """The parity above must not hold trivially: removing a doc changes the answer's score."""
    examples = make_examples()
    w = torch.ones(len(examples), 2, 4)
    w[:, 1, 1] = 0
    lp, _mask = ours(reader, examples, w)
    assert (lp[:, 0] - lp[:, 1]).abs().max() > 1e-4


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_gradient_reaches_weights_never_reader(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    examples = make_examples()
    w = torch.full((len(examples), 2, 4), 0.5, requires_grad=True)
    scores = reader.answer_logprob(reader.prepare(examples), w)
    (-scores.mean().sum()).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    assert w.grad[0].abs().sum() > 0 and w.grad[1, :, :3].abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in reader.model.parameters())


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_views_batch_equals_separate_calls(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    examples = make_examples()
    w = torch.rand(len(examples), 3, 4, generator=torch.Generator().manual_seed(0))
    lp, _ = ours(reader, examples, w)
    for m in range(3):
        single, _ = ours(reader, examples, w[:, m : m + 1])
        torch.testing.assert_close(lp[:, m], single[:, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("name", "reader", "ref"), [r for r in READERS if "sequential" not in r[0]], ids=[i for i in IDS if "sequential" not in i]
)
def test_generation_from_kept_docs_equals_generation_without_the_others(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    """Hard top-k at inference: masked docs are invisible (exact where positions do not move)."""
    ex = make_examples()[0]
    keep = torch.tensor([[False, True, False, True]])  # doc 3 is the longest: the question keeps its position
    only_kept = Example(ex.id, ex.question, ex.answers, (ex.docs[1], ex.docs[3]))
    masked = reader.generate([ex], keep, max_new_tokens=6)
    removed = reader.generate([only_kept], torch.ones(1, 2, dtype=torch.bool), max_new_tokens=6)
    everything = reader.generate([ex], torch.ones(1, 4, dtype=torch.bool), max_new_tokens=6)
    assert masked == removed
    assert len(masked) == 1 and isinstance(everything[0], str)


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_every_reader_path_passes_the_cache_under_this_transformers_keyword(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    """transformers renamed ``past_key_values`` to ``cache`` (the old name warns and goes in 5.40): no
    reader call may use the old one where the new one exists."""
    examples = make_examples()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = reader.prepare(examples)
        reader.answer_logprob(ctx, torch.ones(len(examples), 1, 4))
        reader.doc_attention(ctx, "value_norm")
        if "sequential" not in name:
            reader.generate(examples[:1], torch.ones(1, 4, dtype=torch.bool), max_new_tokens=3)
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_layout_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="fid"):
        make_reader("parallel", tiny_t5(), byte_tokenizer("t5"))
    with pytest.raises(ValueError, match="parallel"):
        FiDReader(tiny_llama(), byte_tokenizer("decoder"))
    with pytest.raises(ValueError, match="'parallel' or 'sequential'"):
        make_reader("fid", tiny_llama(), byte_tokenizer("decoder"))
    with pytest.raises(ValueError, match="reader.layout must be one of fid, parallel, sequential"):
        make_reader("diagonal", tiny_llama(), byte_tokenizer("decoder"))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    """Sequential layout: recomputing layers in the backward pass changes memory, not results."""
    examples = make_examples()
    grads = []
    for ckpt in (False, True):
        reader = make_reader("sequential", tiny_llama(), byte_tokenizer("decoder"), gradient_checkpointing=ckpt)
        w = torch.full((2, 2, 4), 0.6, requires_grad=True)
        loss = -reader.answer_logprob(reader.prepare(examples), w).mean().sum()
        loss.backward()
        grads.append((loss.detach(), w.grad))
        assert not reader.model.training and all(p.grad is None for p in reader.model.parameters())
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6) and grads[0][1].abs().sum() > 0
    with pytest.raises(ValueError, match="sequential layout"):
        make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), gradient_checkpointing=True)


def test_doc_cache_reuses_encodings_exactly_and_respects_its_budget() -> None:
    """Parallel layout: encoded docs survive the step; a second batch with the same docs runs none of them."""
    examples = make_examples()
    plain = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    cached = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=64)
    w = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    first = cached.answer_logprob(cached.prepare(examples), w).token_logprobs
    assert cached.doc_cache is not None and cached.doc_cache.misses == 7 and cached.doc_cache.hits == 0
    again = cached.answer_logprob(cached.prepare(examples[::-1]), w.flip(0)).token_logprobs.flip(0)  # other order
    assert cached.doc_cache.hits == 7 and cached.doc_cache.misses == 7
    assert torch.allclose(first, again, atol=1e-6)
    reference = plain.answer_logprob(plain.prepare(examples), w).token_logprobs
    assert torch.allclose(first, reference, atol=1e-6)
    one_doc = cached.doc_cache.used / 7
    small = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=2.5 * one_doc / 2**20)
    small.prepare(examples)
    assert small.doc_cache is not None and len(small.doc_cache.items) == 2 and small.doc_cache.used <= small.doc_cache.budget


def test_docs_encoded_in_length_buckets_equal_one_padded_batch() -> None:
    """Parallel layout: docs of very different lengths, batched by length (the default) or all padded to
    the longest (``bucket_ratio`` 0), give the same answer log-probabilities; the buckets are real."""
    from gumbel_rerank.data.schema import Doc
    from gumbel_rerank.readers.parallel import length_buckets

    docs = tuple(Doc(id=f"d{j}", title=f"T{j}", text="w " * n, is_gold=j == 0) for j, n in enumerate((2, 40, 9, 38, 20)))
    examples = [Example(id="q", question="Which?", answers=("w",), docs=docs), *make_examples()[:1]]
    w = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(0)).clamp_min(0.05)
    w[1, :, 4] = 0  # the second question has 4 docs
    bucketed = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    padded = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    padded.bucket_ratio = 0.0
    ids = [tuple(d) for ex in examples for d in bucketed._doc_ids(ex)]
    assert len(length_buckets(ids, bucketed.bucket_ratio)) >= 3 and len(length_buckets(ids, 0.0)) == 1
    a = bucketed.answer_logprob(bucketed.prepare(examples), w)
    b = padded.answer_logprob(padded.prepare(examples), w)
    assert torch.equal(a.token_mask, b.token_mask)
    torch.testing.assert_close(a.token_logprobs, b.token_logprobs, atol=1e-5, rtol=0)


def test_a_questions_doc_encodings_do_not_depend_on_the_questions_beside_it() -> None:
    """Buckets are per question: a batch of 4 and two batches of 2 (one process or two) encode every doc
    bitwise the same."""
    from gumbel_rerank.data.synthetic import generate

    questions = generate(4, num_docs=5, seed=0)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    prefix, docs = reader._prefix_ids(), [reader._doc_ids(ex) for ex in questions]
    together = reader._encode_docs(docs, prefix)
    apart = {**reader._encode_docs(docs[:2], prefix), **reader._encode_docs(docs[2:], prefix)}
    assert together.keys() == apart.keys() and len(together) == 20
    for d, layers in together.items():
        for (k, v), (k2, v2) in zip(layers, apart[d], strict=True):
            assert torch.equal(k, k2) and torch.equal(v, v2)


def test_length_buckets_keep_every_doc_once_and_bound_the_padding() -> None:
    from gumbel_rerank.readers.parallel import length_buckets

    g = torch.Generator().manual_seed(0)
    docs = [(*range(int(n)), i) for i, n in enumerate(torch.randint(1, 160, (50,), generator=g))]
    for ratio in (0.0, 0.5, 0.8, 1.0):
        buckets = length_buckets(docs, ratio)
        assert sorted(d for b in buckets for d in b) == sorted(docs)
        lengths = [len(d) for b in buckets for d in b]
        assert lengths == sorted(lengths, reverse=True)  # longest first
        assert all(len(d) >= ratio * len(b[0]) for b in buckets for d in b)
        assert all(len(later[0]) < ratio * len(b[0]) for b, later in itertools.pairwise(buckets))  # fewest cuts
    assert len(length_buckets(docs, 0.0)) == 1 and length_buckets([], 0.8) == []


def test_generation_never_ends_before_its_first_token() -> None:
    """A reader that ranks end-of-sequence first still answers (min_new_tokens=1), then stops at it."""
    model = tiny_llama()
    reader = make_reader("parallel", model, byte_tokenizer("decoder"))
    eos = reader.tokenizer.eos_token_id
    forward = model.forward

    def eos_first(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = forward(*args, **kwargs)
        out.logits[..., eos] = 1e4
        return out

    model.forward = eos_first  # type: ignore[method-assign]
    ex = make_examples()[0]
    answer = reader.generate([ex], torch.ones(1, len(ex.docs), dtype=torch.bool), max_new_tokens=6)
    assert answer[0] != "" and len(answer[0]) <= 2  # one token from the byte tokenizer, then EOS


def test_first_line_skips_leading_blank_lines() -> None:
    from gumbel_rerank.readers.decoder import first_line

    assert first_line("\n\n  Paris \nFrance") == "Paris"
    assert first_line(" \n ") == ""


def test_bf16_docs_under_an_fp32_reader_stay_within_1e_2_nats_and_halve_the_cache() -> None:
    """``reader.doc_dtype: bfloat16``: the docs (no gradient) are encoded and cached in bf16, the question
    and answer positions stay in fp32, and the answer NLL per token moves by < 1e-2 nats; the gradient
    still reaches the weights."""
    examples = make_examples()
    fp32 = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=64)
    half = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=64, doc_dtype=torch.bfloat16)
    assert half.doc_model is not half.model and half.model.dtype == torch.float32
    w = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ref = fp32.answer_logprob(fp32.prepare(examples), w.detach())
    out = half.answer_logprob(half.prepare(examples), w)
    assert out.token_logprobs.dtype == torch.float32
    nll = [-(s.token_logprobs * s.token_mask.unsqueeze(1)).sum(-1) / s.token_mask.sum(-1, keepdim=True) for s in (ref, out)]
    gap = (nll[0] - nll[1]).abs().max().item()
    assert 0 < gap < 1e-2  # not identical (bf16 did run), and close
    out.token_logprobs.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert all(k.dtype == torch.bfloat16 for layers in half.doc_cache.items.values() for k, _ in layers)
    assert half.doc_cache.used * 2 == fp32.doc_cache.used
    with pytest.raises(ValueError, match="parallel layout"):
        from gumbel_rerank.config import load

        load(None, ["reader.layout=sequential", "reader.doc_dtype=bfloat16"])


def test_a_half_precision_doc_cache_moves_the_answer_nll_by_under_1e_2_nats_and_a_hit_equals_a_miss() -> None:
    """``reader.doc_cache_dtype: float16``: docs encoded in fp32, their keys and values kept in fp16
    (half the memory, so a whole training split fits); used the same way cached or not."""
    examples = make_examples()
    fp32 = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=64)
    half = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=64, doc_cache_dtype=torch.float16)
    w = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    ref = fp32.answer_logprob(fp32.prepare(examples), w)
    miss = half.answer_logprob(half.prepare(examples), w)
    hit = half.answer_logprob(half.prepare(examples), w)
    assert half.doc_cache.hits == 7 and torch.equal(miss.token_logprobs, hit.token_logprobs)
    nll = [-(s.token_logprobs * s.token_mask.unsqueeze(1)).sum(-1) / s.token_mask.sum(-1, keepdim=True) for s in (ref, miss)]
    assert 0 < (nll[0] - nll[1]).abs().max().item() < 1e-2
    assert half.doc_cache.used * 2 == fp32.doc_cache.used
    assert all(k.dtype == torch.float16 for layers in half.doc_cache.items.values() for k, _ in layers)


def test_first_line_complete_only_when_more_text_cannot_change_the_answer() -> None:
    """Generation stops once this holds; it must never hold while a continuation could change first_line."""
    import random

    from gumbel_rerank.readers.decoder import first_line, first_line_complete

    cases = {"": False, "\n": False, "  \n \n": False, "Paris": False, "\n\nParis": False, "Paris\n": True, " x\r": True}
    assert {t: first_line_complete(t) for t in cases} == cases
    rng, alphabet = random.Random(0), "ab \n\r\t\x85\u2028"
    text = lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))  # noqa: E731
    tight = 0
    for _ in range(5000):
        head, tail = text(), text()
        if first_line_complete(head):
            assert first_line(head + tail) == first_line(head), (head, tail)
        elif first_line(head + "z\n") != first_line(head):
            tight += 1  # not complete: some continuation does change the answer
    assert tight > 1000
