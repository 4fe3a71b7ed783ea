"""`compare`: same start, same batches, one table with every objective, plots and paired tests."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import byte_tokenizer, make_examples, tiny_llama
from test_train import small_config

from gumbel_rerank.cli import main
from gumbel_rerank.comparison.compare import compare, parse_objectives
from gumbel_rerank.config import ConfigError
from gumbel_rerank.readers import make_reader

NAMES = ["gumbel", "adist", "emdr", "pdist", "loop", "lsr", "supervised"]


def test_compare_writes_table_plots_runs_and_tests(tmp_path: Path, bert_dir: str) -> None:
    cfg = small_config(
        tmp_path, bert_dir, "eval.generate=false", "train.checkpoint_every=0", "train.steps=2", "train.grad_accum=1"
    )
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    result = compare(cfg, NAMES, tmp_path / "cmp", progress=False, reader=reader)
    out = result.out_dir
    assert list(result.rows) == ["zero-shot", *NAMES]
    rows = list(csv.DictReader((out / "table.csv").open()))
    assert [r["row"] for r in rows] == ["zero-shot", *NAMES]
    assert {"R@2_mean", "bridge_R@2_mean", "mining_R@2_mean", "seconds_mean"} <= set(rows[0])
    for name in NAMES:
        assert (out / f"{name}.seed0" / "reranker" / "model.safetensors").exists()
        assert result.rows[name]["seconds"] > 0
        assert (out / f"{name}.run").read_text().count(" Q0 ") > 0  # a TREC run file per row
        if name != "gumbel":
            assert 0.0 <= result.rows[name]["p_vs_gumbel_R@4"] <= 1.0
    for png in ("recall.png", "loss_gap.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| loop | 1 |" in (out / "table.md").read_text()
    again = compare(cfg, NAMES, out, progress=False, reader=reader)  # a rerun trains nothing and says the same
    assert again.rows == result.rows
    # pdist, emdr and lsr shared one one-doc teacher; loop and adist have their own
    kinds = {p.parent.name for p in (out / "teacher_cache").rglob("*.safetensors")}
    assert kinds == {"one_doc", "leave_one_out", "attention_scores"}


def test_every_objective_starts_from_the_same_reranker(tmp_path: Path, bert_dir: str) -> None:
    """With zero steps every objective must reproduce the zero-shot row exactly."""
    cfg = small_config(tmp_path, bert_dir, "eval.generate=false", "train.checkpoint_every=0", "train.steps=0")
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    result = compare(cfg, ["gumbel", "pdist"], tmp_path / "cmp", progress=False, reader=reader)
    for name in ("gumbel", "pdist"):
        for metric in ("R@2", "R@4", "RR", "mining_R@4"):
            assert result.rows[name][metric] == result.rows["zero-shot"][metric]


def test_unknown_objective_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="choose from"):
        parse_objectives("gumbel,emdr3")
    assert parse_objectives("gumbel, pdist,gumbel") == ["gumbel", "pdist"]
    assert main(["compare", "configs/default.yaml", "--objectives", "gumbel,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def _fake_run(row: str, r5: list[float], rr: list[float], nll: list[float]) -> dict:  # type: ignore[type-arg]
    n = len(r5)
    per = {"R@5": r5, "R@2": r5, "RR": rr, "answer_nll": nll}
    held = {m: sum(v) / n for m, v in per.items()}
    return {"row": row, "held_out": held, "per_question": per, "config": {"eval": {"ks": [2, 5]}}, "mining": {}}


def test_the_start_table_states_whether_the_positive_control_moved() -> None:
    """Each row against the start with its paired p and its share of the supervised gain; the caption
    draws no verdict when the supervised row did not move."""
    from gumbel_rerank.comparison.report import start_table

    n = 30
    start = _fake_run("zero-shot", [0.5] * n, [0.5] * n, [3.0] * n)
    moved = _fake_run("supervised", [1.0] * n, [1.0] * n, [2.5] * n)
    half = _fake_run("gumbel", [1.0] * (n // 2) + [0.5] * (n // 2), [0.5] * n, [2.9] * n)
    text = start_table({"zero-shot": [start], "gumbel": [half], "supervised": [moved]})
    assert "it moved, so this setting can separate the objectives" in text
    gumbel_line = next(line for line in text.splitlines() if line.startswith("| G-Rerank | 1 | "))
    assert "+25.0 (p 0.000, 50% of supervised)" in gumbel_line and "-0.100" in gumbel_line
    assert "| zero-shot (the start, absolute) | - | 50.0 | 50.0 | 50.0 | 3.000 |" in text
    still = _fake_run("supervised", [0.5] * n, [0.5] * n, [3.0] * n)
    text = start_table({"zero-shot": [start], "gumbel": [half], "supervised": [still]})
    assert "cannot separate the objectives; read no verdict from it" in text
    assert "of supervised" not in text.split("\n\n", 1)[1]  # no share of a gain that is not there
    assert start_table({"gumbel": [half]}) == ""  # no start row: nothing to compare against


def test_the_start_tables_more_metrics_test_what_was_kept_per_question_and_show_the_mean_of_the_rest() -> None:
    """FullSupport@k, answer-doc and bridge-doc R@k against the start: a paired p where every run kept the
    metric per question, else the held-out means' change with p n/a (answer-doc R@k, not kept before)."""
    from gumbel_rerank.comparison.report import start_table

    n = 30
    runs = {}
    for name, full, answer in (("zero-shot", 0.5, 0.4), ("gumbel", 1.0, 0.6), ("supervised", 1.0, 0.8)):
        run = _fake_run(name, [0.5] * n, [0.5] * n, [3.0] * n)
        run["per_question"]["FullSupport@5"] = [full] * n
        run["held_out"].update({"FullSupport@5": full, "answer_R@5": answer})
        runs[name] = [run]
    text = start_table(runs, more=True)
    assert "| row | seeds | FullSupport@5 | answer-doc R@5 |" in text and "bridge" not in text  # no bridge values
    assert "| zero-shot (the start, absolute) | - | 50.0 | 40.0 |" in text
    # answer-doc R@5: no per-question values, so no p for the control either, so no share of its gain
    assert "| G-Rerank | 1 | +50.0 (p 0.000, 100% of supervised) | +20.0 (p n/a) |" in text
    assert "Positive control" not in text  # the main table's caption says that once


def test_per_question_runs_reads_bare_per_question_values_as_result_files() -> None:
    """A second held-out set's per-question values (transfer.json's rows) become runs whose held-out
    means skip the questions without a value, grouped by row over seeds, zero-shot first: start_table
    gives the same table as for result files with those values."""
    from gumbel_rerank.comparison.report import per_question_runs, start_table

    n = 30
    start = _fake_run("zero-shot", [0.5] * n, [0.5] * n, [3.0] * n)
    half = _fake_run("gumbel", [1.0] * (n // 2) + [0.5] * (n // 2), [0.5] * n, [2.9] * n)
    sup = _fake_run("supervised", [1.0] * n, [1.0] * n, [2.5] * n)
    bare = {f"{r['row']}.seed0": {"row": r["row"], "seed": 0, "per_question": r["per_question"]} for r in (sup, half)}
    runs = per_question_runs({**bare, "zero-shot": {"row": "zero-shot", "per_question": start["per_question"]}}, k=5)
    assert list(runs) == ["zero-shot", "gumbel", "supervised"]
    assert start_table(runs) == start_table({"zero-shot": [start], "gumbel": [half], "supervised": [sup]})
    gap = {"row": "gumbel", "per_question": {"R@5": [None, 1.0, float("nan"), 0.0], "answer_nll": [1.0, 2.0, 3.0, 4.0]}}
    two = per_question_runs({"gumbel.seed0": gap, "gumbel.seed1": gap}, k=5)
    assert [r["held_out"] for r in two["gumbel"]] == [{"R@5": 0.5, "answer_nll": 2.5}] * 2


def test_a_sweep_hands_each_row_the_starts_held_out_scores(tmp_path: Path, bert_dir: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The zero-shot row scores the held-out questions once; each trained row's step-0 point reads those
    scores and its final evaluation the selected point's, so a row scores them only at its later points."""
    import json

    import gumbel_rerank.comparison.sweep as sweep_module
    import gumbel_rerank.training.loop as loop_module
    import gumbel_rerank.training.selection as selection_module
    from gumbel_rerank.evaluation.evaluate import score_all

    cfg = small_config(
        tmp_path,
        bert_dir,
        "eval.generate=false",
        "train.checkpoint_every=0",
        "train.steps=2",
        "train.grad_accum=1",
        "train.eval_every=2",
        "train.select=val_loss",
        "data.num_train=10",
        "data.num_val=2",
    )
    scored: list[int] = []

    def counting(reranker, examples, **kw):  # type: ignore[no-untyped-def]
        scored.append(len(examples))
        return score_all(reranker, examples, **kw)

    for module in (sweep_module, loop_module, selection_module):
        monkeypatch.setattr(module, "score_all", counting)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    out = compare(cfg, ["gumbel", "pdist"], tmp_path / "cmp", progress=False, reader=reader).out_dir
    assert scored.count(4) == 1 + 2  # 4 held-out questions: the zero-shot row, then each row's step-2 point
    zero = json.loads((out / "runs" / "zero-shot.json").read_text())["held_out"]
    for row in ("gumbel", "pdist"):
        first = json.loads((out / f"{row}.seed0" / "metrics.jsonl").read_text().splitlines()[0])
        assert first["step"] == 0 and first["held_out_R@2"] == zero["R@2"]
    # stored scores are handed over only where they fit the questions: one number per doc
    examples = make_examples()
    good = [[0.0] * len(ex.docs) for ex in examples]
    assert sweep_module._fits(good, examples)
    assert not sweep_module._fits(None, examples) and not sweep_module._fits(good[:1], examples)
    assert not sweep_module._fits([[None] * len(ex.docs) for ex in examples], examples)
