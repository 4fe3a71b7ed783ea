"""`compare`: same start, same batches, one table with every objective, plots and paired tests."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import byte_tokenizer, tiny_llama
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
