"""Label-free model selection: validation answer NLL under the hard top-k, best checkpoint kept."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama
from test_train import small_config

from gumbel_rerank.evaluation.evaluate import reader_metrics, score_all, topk_answer_nll, topk_keep
from gumbel_rerank.objectives.base import Batch, answer_nll
from gumbel_rerank.readers import make_reader
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.training.loop import train


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_topk_answer_nll_equals_the_reader_on_the_kept_docs_only(bert_dir: str, layout: str) -> None:
    """Evaluation encodes only the kept docs, as a deployed reader reads them; that is the masked NLL
    over all docs up to where the question starts (after the longest kept doc, not the longest of all)."""
    reader = make_reader(layout, tiny_llama(), byte_tokenizer("decoder"))
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    examples = make_examples()
    scores = score_all(reranker, examples)
    got = topk_answer_nll(reader, examples, scores, k=2)
    for ex, s, value in zip(examples, scores, got, strict=True):
        top = sorted(sorted(range(len(s)), key=lambda i: -s[i])[:2])
        only_kept = replace(ex, docs=tuple(ex.docs[i] for i in top))
        assert abs(answer_nll(reader, Batch([only_kept]), torch.ones(1, 1, 2)).item() - value) < 1e-5
        keep = torch.zeros(1, 1, len(ex.docs))
        keep[0, 0, top] = 1.0
        assert abs(answer_nll(reader, Batch([ex]), keep).item() - value) < 1e-3  # masked: positions of all docs


def test_generation_reads_the_kept_docs_as_the_masked_reader_does(bert_dir: str) -> None:
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    examples = make_examples()
    scores = score_all(reranker, examples)
    got = reader_metrics(reader, examples, scores, k=2, max_new_tokens=4)["predictions"]
    masked = reader.generate(examples, topk_keep(scores, max(len(ex.docs) for ex in examples), k=2), max_new_tokens=4)
    assert got == masked


def test_select_val_loss_keeps_and_restores_the_best_checkpoint(tmp_path: Path, bert_dir: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = small_config(
        tmp_path,
        bert_dir,
        "data.num_train=10",
        "data.num_val=3",
        "train.steps=6",
        "train.eval_every=2",
        "train.select=val_loss",
        "train.checkpoint_every=0",
        "eval.generate=false",
        "train.lr=5e-3",
    )
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=96)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    import gumbel_rerank.training.loop as loop_module
    import gumbel_rerank.training.selection as selection_module

    scored: list[int] = []  # the size of each question list scored, by the loop and the selector

    def counting(reranker, examples, **kw):  # type: ignore[no-untyped-def]
        scored.append(len(examples))
        return score_all(reranker, examples, **kw)

    monkeypatch.setattr(loop_module, "score_all", counting)
    monkeypatch.setattr(selection_module, "score_all", counting)
    result = train(cfg, progress=False, reranker=reranker, reader=reader)
    run = result.run_dir
    # the held-out questions are scored once for the start (step 0's point reads those scores) and once
    # per later point; the final evaluation reads the selected point's scores instead of scoring again
    held = len(result.held_out_scores)
    assert held != 3 and scored.count(held) == 4 and scored.count(3) == 4  # 3 validation questions, 4 points
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    points = [x for x in lines if "val_loss" in x]
    assert [p["step"] for p in points] == [0, 2, 4, 6] and all("held_out_R@2" in p and "val_R@2" in p for p in points)
    best = min(points, key=lambda p: p["val_loss"])
    full = json.loads((run / "report.json").read_text())
    report = full["selection"]
    assert report["selected_step"] == best["step"] and report["points"] == 4
    # where the wall time went: every part measured, the steps' part is the logged step times
    parts = full["seconds"]
    assert set(parts) == {"start_evaluation", "steps", "validation", "checkpoints", "final_evaluation", "total"}
    assert all(v >= 0 for v in parts.values()) and parts["validation"] > 0 and parts["final_evaluation"] > 0
    assert abs(parts["steps"] - sum(x["seconds"] for x in lines if "loss" in x and "val_loss" not in x)) < 1e-6
    assert abs(parts["total"] - sum(v for k, v in parts.items() if k != "total")) < 1e-9
    # a paired p per metric, before vs after, with the per-question values beside the report
    assert 0 <= full["p_values"]["R@2"] <= 1 and "per_question" not in full["before"]
    detail = json.loads((run / "held_out_per_question.json").read_text())
    assert len(detail["after"]["R@2"]) == len(result.held_out_scores)
    assert json.loads((run / "best" / "selection.json").read_text())["step"] == best["step"]
    # the final reranker is the selected one, and the validation questions were never trained on
    final = Reranker.from_pretrained(str(run / "reranker"))
    kept = Reranker.from_pretrained(str(run / "best"))
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), kept.state_dict().values(), strict=True))
    from gumbel_rerank.training.run_state import load_splits

    held_out = load_splits(cfg.data)[1]
    assert score_all(final, held_out) == result.held_out_scores  # the kept scores are the saved reranker's
    assert (run / "selection.png").exists()


def test_a_run_that_keeps_its_start_reports_the_starts_evaluation_without_running_it_again(
    tmp_path: Path, bert_dir: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """An LR below float32 resolution: the weights never change, every validation point ties the start,
    so step 0 is selected and the restored reranker is the start. Its held-out evaluation is the
    start's, taken as is (one evaluation, not two)."""
    cfg = small_config(
        tmp_path,
        bert_dir,
        "data.num_train=10",
        "data.num_val=3",
        "train.steps=2",
        "train.eval_every=1",
        "train.select=val_loss",
        "train.checkpoint_every=0",
        "eval.generate=false",
        "train.lr=1e-30",
    )
    import gumbel_rerank.training.loop as loop_module
    from gumbel_rerank.evaluation.evaluate import evaluate

    calls: list[int] = []

    def counting(*args, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        return evaluate(*args, **kw)

    monkeypatch.setattr(loop_module, "evaluate", counting)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    result = train(cfg, progress=False, reader=reader)
    full = json.loads((result.run_dir / "report.json").read_text())
    assert full["selection"]["selected_step"] == 0 and full["selection"]["points"] == 3
    assert len(calls) == 1  # the start's; the final evaluation reused it
    assert full["after"] == full["before"] and "answer_nll" in full["after"]
    assert set(full["p_values"].values()) == {1.0}
    detail = json.loads((result.run_dir / "held_out_per_question.json").read_text())
    assert detail["after"] == detail["before"]
    # and the reused evaluation is what evaluating the saved reranker gives
    saved = Reranker.from_pretrained(str(result.run_dir / "reranker"))
    from gumbel_rerank.training.run_state import load_splits

    again = evaluate(cfg, saved, reader, load_splits(cfg.data)[1], progress=False)
    for name, value in full["after"].items():
        assert again[name] == pytest.approx(value, abs=1e-5), name


def test_patience_stops_early(tmp_path: Path, bert_dir: str) -> None:
    cfg = small_config(
        tmp_path,
        bert_dir,
        "data.num_train=10",
        "data.num_val=3",
        "train.steps=40",
        "train.eval_every=1",
        "train.patience=2",
        "train.checkpoint_every=0",
        "eval.generate=false",
        "train.lr=0.05",
    )
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    result = train(cfg, progress=False, reader=reader)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    points = [x for x in lines if "val_loss" in x]
    assert len(points) < 40  # stopped: two evaluations in a row without a new best
    best = min(range(len(points)), key=lambda i: points[i]["val_loss"])
    assert len(points) - 1 - best == 2


class GoldReader:
    """A reader whose answer likelihood rises with the weight on gold docs (a known-optimal ranking):
    p(answer) = (0.01 + sum_i w_i u_i) / (1 + sum_i w_i), u_i = 0.9 for gold docs, else 0."""

    layout = "closed-form"
    model = torch.nn.Linear(1, 1)

    def prepare(self, examples: list, *, with_answer: bool = True) -> list:  # type: ignore[type-arg]
        return examples

    def answer_logprob(self, context: list, doc_weights: torch.Tensor):  # type: ignore[no-untyped-def, type-arg]
        from gumbel_rerank.readers.base import AnswerScores

        u = torch.zeros(doc_weights.shape[0], doc_weights.shape[2])
        for b, ex in enumerate(context):
            for n, d in enumerate(ex.docs):
                u[b, n] = 0.9 if d.is_gold else 0.0
        p = (0.01 + (doc_weights * u.unsqueeze(1)).sum(-1)) / (1 + doc_weights.sum(-1))
        return AnswerScores(p.log().unsqueeze(-1), torch.ones(p.shape[0], 1, dtype=torch.bool))

    def generate(self, examples: list, keep: torch.Tensor, *, max_new_tokens: int = 16) -> list:  # type: ignore[type-arg]
        return ["" for _ in examples]


def test_stability_selected_checkpoint_is_no_worse_than_the_start(tmp_path: Path, bert_dir: str) -> None:
    """A deliberately too-high LR random-walks the reranker; label-free selection must not lose the start."""
    cfg = small_config(
        tmp_path,
        bert_dir,
        "data.num_train=40",
        "data.num_val=8",
        "data.num_eval=24",
        "train.steps=30",
        "train.eval_every=3",
        "train.select=val_loss",
        "train.checkpoint_every=0",
        "eval.generate=false",
        "train.lr=3e-3",
        "train.grad_accum=1",
        "eval.ks=[2]",
    )
    result = train(cfg, progress=False, reader=GoldReader())
    points = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    points = [p for p in points if "val_loss" in p]
    assert len(points) == 11 and points[0]["step"] == 0
    assert result.after["R@2"] >= result.before["R@2"]
    assert result.after["R@2"] >= min(p["held_out_R@2"] for p in points)  # never the worst checkpoint


def test_validation_docs_stay_encoded_across_runs_sharing_a_reader_and_apart_from_training_docs(
    tmp_path: Path, bert_dir: str
) -> None:
    from gumbel_rerank.training.selection import Selector

    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"), doc_cache_mb=64)
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    validation = make_examples()
    n_docs = sum(min(len(ex.docs), 2) for ex in validation)  # only the docs the top-2 view keeps are encoded
    first = Selector(tmp_path / "a", reader, validation, [], k=2, save=False)
    first.evaluate(0, reranker)
    assert reader.validation_cache is not None and len(reader.validation_cache.items) == n_docs  # the top 2 of each
    assert reader.doc_cache is not None and not reader.doc_cache.items  # the training docs' cache is untouched
    second = Selector(tmp_path / "b", reader, validation, [], k=2, save=False)  # e.g. a sweep's next row
    misses = reader.validation_cache.misses
    point = second.evaluate(0, reranker)
    assert reader.validation_cache.misses == misses and point["val_loss"] == first.points[0]["val_loss"]
    reader.forget()  # the reader's weights changed: nothing encoded before is kept
    assert not reader.validation_cache.items
