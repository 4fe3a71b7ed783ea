"""Stabilisers (trust region, top layers only) and the gradient-signal measurement."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama
from test_train import small_config

from gumbel_rerank.config import ObjectiveConfig
from gumbel_rerank.data.schema import doc_valid
from gumbel_rerank.data.synthetic import generate
from gumbel_rerank.evaluation.signal import gradient_agreement
from gumbel_rerank.readers import make_reader
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.training.loop import train
from gumbel_rerank.training.stabilize import StartAnchor, restrict_trainable


def test_start_anchor_is_zero_at_the_start_and_pulls_back(bert_dir: str) -> None:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    examples = make_examples()
    valid = doc_valid(examples)
    anchor = StartAnchor(reranker, weight=2.0, temperature=0.05)
    kl = anchor(examples, reranker.score(examples), valid)
    assert abs(kl.item()) < 1e-6
    start = anchor.start.score(examples).detach()
    moved = (start + 0.05 * torch.arange(start.shape[1], dtype=start.dtype)).requires_grad_(True)  # a new ranking
    kl = anchor(examples, moved, valid)
    assert kl.item() > 1e-4
    (grad,) = torch.autograd.grad(kl, moved)
    # a step against the gradient brings the scores' distribution back towards the start
    again = anchor(examples, (moved - 1e-3 * grad).detach(), valid)
    assert again.item() < kl.item()
    expected = (start / 0.05).log_softmax(-1).exp() * ((start / 0.05).log_softmax(-1) - (moved / 0.05).log_softmax(-1))
    assert kl.item() == pytest.approx(2.0 * expected[valid].sum().item() / len(examples), rel=1e-4)


def test_train_layers_freezes_all_but_the_top(tmp_path: Path, bert_dir: str) -> None:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=96)
    before = {k: v.clone() for k, v in reranker.encoder.state_dict().items()}
    cfg = small_config(tmp_path, bert_dir, "train.train_layers=1", "objective.kl_to_start=0.5", "eval.generate=false")
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    run = train(cfg, progress=False, reranker=reranker, reader=reader).run_dir
    after = reranker.encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layer.1." in k or k.startswith(("classifier", "bert.pooler")) for k in changed)
    assert not any("embeddings" in k or ".layer.0." in k for k in changed)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(x["kl_to_start"] >= 0 for x in lines)
    with pytest.raises(ValueError, match="has 2 layers"):
        restrict_trainable(reranker, 3)


def test_gradient_agreement_is_one_without_noise_and_below_one_with_it(bert_dir: str) -> None:
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=256)
    examples = generate(8, num_docs=4, seed=0)
    base = ObjectiveConfig(k=2, log_hard_loss=False)
    quiet = gradient_agreement(dataclasses.replace(base, noise=False), reranker, reader, examples, batch_size=2)
    noisy = gradient_agreement(base, reranker, reader, examples, batch_size=2)
    pdist = gradient_agreement(dataclasses.replace(base, name="pdist"), reranker, reader, examples, batch_size=2)
    assert quiet["noise"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert pdist["noise"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert noisy["noise"]["mean"] < 0.999
    assert -1 <= noisy["minibatch"]["mean"] <= 1 and pdist["minibatch"]["mean"] < 0.9999
    with pytest.raises(ValueError, match="needs 16 questions"):
        gradient_agreement(base, reranker, reader, examples, batch_size=4)
