"""``gumbel-rerank audit``: its views are the reader's own answer NLL with the same docs physically kept,
and on a fake reader whose preference is known the subset signal and the verdict come out as they must."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_examples
from test_readers import IDS, READERS

from gumbel_rerank.cli import main
from gumbel_rerank.data import Doc, Example
from gumbel_rerank.evaluation.audit import auc, audit_examples, question_views, view_nlls
from gumbel_rerank.readers.base import AnswerScores


@pytest.mark.parametrize(("name", "reader", "ref"), READERS, ids=IDS)
def test_every_view_equals_the_reader_with_those_docs_physically_kept(name: str, reader: Any, ref: Any) -> None:
    for ex in make_examples():
        scores = [0.3, -1.0, 2.0, 0.5][: len(ex.docs)]  # the start ranks doc 2, then 3, 0, 1: gold docs 0, 1
        views = question_views(ex, scores, k=2, subsets=3, rng=random.Random(0))
        nll = view_nlls(reader, ex, views.masks)
        assert views.swaps and views.gold is not None  # the top 2 misses a gold doc: swap views exist
        for row, mask in enumerate(views.masks):
            keep = [i for i, v in enumerate(mask.tolist()) if v]
            if keep:  # the no-doc view has no physical counterpart in every layout's reference
                expected = -ref(reader, ex, keep).mean().item()
                assert math.isclose(nll[row], expected, abs_tol=1e-4), (name, ex.id, keep)
        assert [i for i, v in enumerate(views.masks[1].tolist()) if v] == sorted(views.topk)


class SetReader:
    """A fake reader: answer NLL 3.0 per token, 1.0 when every gold doc is kept (``needs_gold``); with
    ``needs_gold`` False it ignores the docs. Its one-doc preference is the doc's index (higher = better)."""

    def __init__(self, needs_gold: bool) -> None:
        self.needs_gold = needs_gold

    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> list[Example]:
        return examples

    def answer_logprob(self, context: list[Example], w: torch.Tensor) -> AnswerScores:
        B, M, N = w.shape
        lp = torch.full((B, M, 1), -3.0)
        for b, ex in enumerate(context):
            gold = torch.tensor([d.is_gold for d in ex.docs] + [False] * (N - len(ex.docs)))
            for m in range(M):
                kept = w[b, m] > 0
                if self.needs_gold and bool(kept[gold].all()):
                    lp[b, m, 0] = -1.0
                elif self.needs_gold and int(kept.sum()) == 1:
                    lp[b, m, 0] = -3.0 + 0.01 * int(kept.nonzero()[0])
        return AnswerScores(lp, torch.ones(B, 1, dtype=torch.bool))


def questions(n: int = 12) -> tuple[list[Example], list[list[float]]]:
    """Six docs each, gold 0 and 1; the start ranks doc 0 first and doc 1 last: its top 3 misses doc 1."""
    exs = [
        Example(f"q{i}", "Q?", ("A",), tuple(Doc(f"d{j}", "", f"text {j}", is_gold=j < 2) for j in range(6))) for i in range(n)
    ]
    return exs, [[5.0, 0.0, 4.0, 3.0, 2.0, 1.0] for _ in exs]


def test_the_subset_signal_is_one_when_the_reader_needs_both_gold_docs_and_half_when_it_ignores_docs() -> None:
    exs, scores = questions()
    wants = audit_examples(SetReader(needs_gold=True), exs, scores, k=3, progress=False)["summary"]  # type: ignore[arg-type]
    blind = audit_examples(SetReader(needs_gold=False), exs, scores, k=3, progress=False)["summary"]  # type: ignore[arg-type]
    assert wants["swaps"] == blind["swaps"] == 12
    assert wants["swap_share_lowering_nll"] == 1.0 and wants["swap_mean_change"] == pytest.approx(-2.0)
    assert blind["swap_share_lowering_nll"] == 0.5 and blind["swap_mean_change"] == 0.0
    assert wants["nll_gold_only"] == pytest.approx(1.0) and wants["start_R@k"] == 0.5
    assert blind["nll_sd_across_k_subsets"] == 0.0 and wants["nll_sd_across_k_subsets"] > 0.05
    # the per-doc teacher prefers the highest index (doc 5): gold docs 0 and 1 rank last
    assert wants["teacher_auc"] == 0.0 and wants["start_auc"] == 0.5 and wants["teacher_R@k"] == 0.0
    assert "no objective can learn" in blind["verdict"] and "no set-level signal" in blind["verdict"]
    assert "prefers complete gold sets in 100% of 12 swaps" in wants["verdict"]
    assert "distillation will pull recall down" in wants["verdict"]


def test_auc_counts_ties_half_and_needs_both_kinds() -> None:
    assert auc([3.0, 1.0, 2.0], [True, False, False]) == 1.0
    assert auc([1.0, 1.0], [True, False]) == 0.5
    assert math.isnan(auc([1.0, 2.0], [False, False]))


def test_the_audit_command_prints_a_table_writes_audit_json_and_a_verdict(
    tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import byte_tokenizer, tiny_llama

    from gumbel_rerank import readers
    from gumbel_rerank.readers import make_reader

    monkeypatch.setattr(
        readers, "build_reader", lambda cfg, **kw: make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    )
    out = tmp_path / "audit.json"
    argv = ["audit", "configs/default.yaml", f"reranker.model={bert_dir}", "reranker.kind=cross", "--questions", "4"]
    assert main([*argv, "--out", str(out), "--split", "held-out", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "answer NLL, the start's top k" in printed and "per-doc teacher's AUC" in printed
    assert printed.strip().splitlines()[-1].startswith("verdict: ")
    saved = json.loads(out.read_text())
    assert saved["summary"]["questions"] == 4 and len(saved["questions"]) == 4 and saved["setup"]["data"].endswith("(held-out)")


def test_the_audit_table_in_experiments_readme_is_the_committed_results() -> None:
    """experiments/README.md's audit block is what `experiments/audit.py --report` makes of the JSON files."""
    from experiments.audit import BLOCK, HERE, readme_block

    text = (HERE / "README.md").read_text()
    start, end = text.index(BLOCK[0]) + len(BLOCK[0]), text.index(BLOCK[1])
    assert text[start:end].strip() == readme_block()
