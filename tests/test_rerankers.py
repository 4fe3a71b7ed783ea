"""Rerankers: shapes, missing slots, bi-encoder cosine, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import make_examples

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


def test_save_and_reload_keep_kind_and_scores(bert_dir: str, tmp_path: Path) -> None:
    r = Reranker.from_pretrained(bert_dir, kind="bi", temperature=0.2, max_length=48)
    r.save_pretrained(tmp_path / "r")
    again = Reranker.from_pretrained(str(tmp_path / "r"))
    assert (again.kind, again.temperature, again.max_length) == ("bi", 0.2, 48)
    assert torch.equal(r.score(make_examples()), again.score(make_examples()))
    assert (tmp_path / "r" / "model.safetensors").exists()
