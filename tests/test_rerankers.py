"""Rerankers: shapes, missing slots, bi-encoder cosine, save/load round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import make_examples

from gumbel_rerank.buckets import length_groups
from gumbel_rerank.data.schema import doc_text
from gumbel_rerank.rerankers import MISSING, Reranker


def test_cross_encoder_scores_shape_and_missing_slots(bert_dir: str) -> None:
    r = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    examples = make_examples()
    s = r.score(examples)
    assert s.shape == (2, 4) and s[1, 3] == MISSING and torch.isfinite(s).all()
    pair = r.score_pairs([examples[0].question], [f"{examples[0].docs[2].title}\n{examples[0].docs[2].text}"])
    torch.testing.assert_close(pair[0], s[0, 2])  # batched scoring equals scoring one pair alone


def test_bi_encoder_is_cosine_over_temperature(bert_dir: str) -> None:
    r = Reranker.from_pretrained(bert_dir, kind="bi", temperature=0.1, max_length=64)
    s = r.score(make_examples())
    assert (s[0].abs() <= 10 + 1e-4).all()  # |cos| <= 1
    q = r.embed(["a question"])
    assert torch.allclose(q.norm(dim=-1), torch.ones(1))
    texts = ["a question", "a much longer text " * 6, "short"]  # grouped by length, back in input order
    torch.testing.assert_close(r.embed(texts), torch.cat([r.embed([t]) for t in texts]), atol=1e-5, rtol=0)


def test_save_and_reload_keep_kind_and_scores(bert_dir: str, tmp_path: Path) -> None:
    r = Reranker.from_pretrained(bert_dir, kind="bi", temperature=0.2, max_length=48)
    r.save_pretrained(tmp_path / "r")
    again = Reranker.from_pretrained(str(tmp_path / "r"))
    assert (again.kind, again.temperature, again.max_length) == ("bi", 0.2, 48)
    assert torch.equal(r.score(make_examples()), again.score(make_examples()))
    assert (tmp_path / "r" / "model.safetensors").exists()


def test_bf16_precision_runs_only_with_a_gradient_and_keeps_float32_weights(bert_dir: str) -> None:
    """``reranker.precision: bf16``: training scores run under bf16 autocast and come back float32, the
    weights and their gradients stay float32, and evaluation (no gradient) scores exactly as fp32 does.
    (The gradient's direction against fp32 is tested on the real MiniLM: tests/test_real_models.py.)"""
    examples = make_examples()
    for kind in ("cross", "bi"):
        reranker = Reranker.from_pretrained(bert_dir, kind=kind, max_length=64)
        scores = {}
        for precision in ("fp32", "bf16"):
            reranker.precision = precision
            reranker.zero_grad(set_to_none=True)
            out = reranker.score(examples)
            assert out.dtype == torch.float32
            out.clamp_min(MISSING / 2).softmax(-1)[:, 0].sum().backward()
            params = [p for p in reranker.parameters() if p.grad is not None]
            assert params and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params)
            scores[precision] = out.detach()
            with torch.no_grad():
                scores[precision, "eval"] = reranker.score(examples)
        assert not torch.equal(scores["fp32"], scores["bf16"])  # bf16 did run
        assert torch.allclose(scores["fp32"], scores["bf16"], atol=0.1 if kind == "cross" else 1.0)
        assert torch.equal(scores["fp32", "eval"], scores["bf16", "eval"])  # evaluation stays float32


def test_from_config_carries_the_precision(bert_dir: str) -> None:
    from gumbel_rerank.config import RerankerConfig

    reranker = Reranker.from_config(RerankerConfig(model=bert_dir, kind="cross", precision="bf16"))
    assert reranker.precision == "bf16"


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_score_all_sorts_pairs_across_questions_and_keeps_each_questions_scores(bert_dir: str, kind: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Evaluation scores pairs (a bi-encoder: texts) longest first across questions (little padding);
    the scores are each question's own, as scoring it alone gives them, and the reranker's mode comes back."""
    import gumbel_rerank.evaluation.evaluate as evaluate_module
    from gumbel_rerank.evaluation.evaluate import score_all

    r = Reranker.from_pretrained(bert_dir, kind=kind, max_length=64)
    examples = [*make_examples(), *reversed(make_examples())]
    with torch.no_grad():  # float32 (with a gradient the reranker may train in bf16)
        want = [r.score([ex])[0, : len(ex.docs)].tolist() for ex in examples]
    r.train()
    monkeypatch.setattr(evaluate_module, "PAIR_BLOCK", 5)  # blocks that split a question's pairs
    got = score_all(r, examples, batch_size=1)
    assert r.training  # restored
    assert [len(s) for s in got] == [len(ex.docs) for ex in examples]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    assert score_all(r, []) == [] and r.predict([]) == [] and r.training


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_scoring_in_length_groups_equals_one_padded_batch_scores_and_gradients(bert_dir: str, kind: str) -> None:
    """score() runs its inputs in groups of similar length; padding is masked, so the scores and the
    gradients equal those of one batch padded to the longest input (bucket_ratio 0)."""
    r = Reranker.from_pretrained(bert_dir, kind=kind, max_length=64)
    examples = [  # docs of very different lengths (some cut at max_length), as real paragraphs are
        dataclasses.replace(ex, docs=tuple(dataclasses.replace(d, text=d.text[: 3 + 9 * n]) for n, d in enumerate(ex.docs)))
        for ex in make_examples()
    ]
    texts = [doc_text(d.title, d.text) for ex in examples for d in ex.docs]
    queries = [ex.question for ex in examples for _ in ex.docs]
    enc = r.encode_pairs(queries, texts) if kind == "cross" else r.tokenizer(texts, truncation=True, max_length=64)
    lengths = [len(ids) for ids in enc["input_ids"]]
    assert len(length_groups(lengths, r.bucket_ratio)) >= 2  # the fixture's docs do split into groups
    out = {}
    for ratio in (r.bucket_ratio, 0.0):
        r.bucket_ratio = ratio
        r.zero_grad()
        scores = r.score(examples)
        scores.sum().backward()
        out[ratio] = (scores.detach(), [p.grad.clone() for p in r.parameters() if p.grad is not None])
    (grouped, g_grads), (padded, p_grads) = out.values()
    torch.testing.assert_close(grouped, padded, atol=1e-5, rtol=0)
    assert len(g_grads) == len(p_grads) > 0
    for a, b in zip(g_grads, p_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
