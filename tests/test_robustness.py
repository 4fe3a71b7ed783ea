"""Never lose a run: kill -9 and resume, two processes equal one, the non-finite guard, bad
configs rejected before any model loads, and fuzzed config and data parsers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from gumbel_rerank.cli import main
from gumbel_rerank.config import VALID_KEYS, Config, ConfigError, load, parse_override
from gumbel_rerank.data.formats import parse_record, read_examples
from gumbel_rerank.data.schema import DataError, Example
from gumbel_rerank.objectives.base import ObjectiveBase
from gumbel_rerank.training import checkpoint

WORKER = str(Path(__file__).parent / "train_worker.py")
ROOT = Path(__file__).parent.parent


def worker(*args: str, env: dict[str, str] | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*(launcher or [sys.executable]), WORKER, *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})},
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "reranker" / "model.safetensors"))


def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(tmp_path: Path, bert_dir: str) -> None:
    """The tiny BERT reranker has dropout on: the RNG states are restored too, so the match is exact."""
    steps = "train.steps=7"
    full = worker(str(tmp_path / "full"), bert_dir, steps)
    assert full.returncode == 0, full.stderr
    killed = worker(str(tmp_path / "run"), bert_dir, steps, "--kill-at-step", "6")
    assert killed.returncode == -9  # SIGKILL: no handler, no cleanup
    assert checkpoint.latest(tmp_path / "run") == tmp_path / "run" / "checkpoint-4"
    assert not (tmp_path / "run" / "reranker").exists()
    resumed = worker(str(tmp_path / "run"), bert_dir, steps, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "full"), weights(tmp_path / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == list(range(1, 8))  # steps 5-6 logged before the kill are not duplicated
    full_log = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in log] == [x["loss"] for x in full_log]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["resumed_from_step"] == 4


def test_resume_with_another_config_is_refused(tmp_path: Path, bert_dir: str) -> None:
    assert worker(str(tmp_path / "run"), bert_dir, "train.steps=2").returncode == 0
    other = worker(str(tmp_path / "run"), bert_dir, "train.steps=4", "train.lr=0.5", "--resume")
    assert other.returncode != 0 and "another config" in other.stderr


def no_dropout_bert(tmp_path: Path) -> str:
    from conftest import save_tiny_bert

    return save_tiny_bert(tmp_path / "bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# ||two - one|| / ||one - start|| after 4 AdamW steps (measured: pdist 3.9e-3; gumbel 7e-4 with each batch's docs
# encoded as one padded batch, 1.1e-2 with the default length buckets and 1.6e-2 with buckets at ratio 0.95,
# though a question's doc encodings are then bitwise the same in one process and in two: test_readers.py).
# Adam's first steps move every weight by about +-lr whatever its gradient's size, so weights whose gradient
# is rounding-sized flip direction between runs, and which do moves with any rounding change. The step-1
# checks below are the sharp ones.
MULTI_PROCESS_RTOL = 3e-2


@pytest.mark.parametrize("objective", ["gumbel", "pdist"])
def test_two_processes_train_the_same_reranker_as_one(tmp_path: Path, objective: str) -> None:
    """torchrun, 2 CPU processes (gloo): each takes half of every batch of 4; the same global batch in one process.

    Dropout is off (processes draw their own dropout masks); the Gumbel noise follows each question.
    The first step's loss and gradient norm (the all-reduced mean, so a sum instead of a mean is
    caught) match to float32 precision, later losses to 1e-3; later gradient norms and the weights match within
    MULTI_PROCESS_RTOL (of how far the weights moved)
    (the tiny reader gives gradients near 1e-6, where Adam turns rounding into visible steps).
    """
    bert = no_dropout_bert(tmp_path)
    # fp32 throughout, reranker and docs: the claim is float32 agreement (bf16 rounds each process's half on its own)
    args = ["train.steps=4", "train.checkpoint_every=0", f"objective.name={objective}", "reranker.precision=fp32"]
    args += ["reader.doc_dtype="]
    one = worker(str(tmp_path / "one"), bert, *args, env={"OMP_NUM_THREADS": "1"})  # same threads per process
    assert one.returncode == 0, one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    two = worker(str(tmp_path / "two"), bert, *args, launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    logs = [[json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in ("one", "two")]
    first, later = logs[0][0], logs[1][0]  # step 1: same weights, so the same loss and gradient to fp32 precision
    # abs: PDist's loss is a KL of about 0.01 built from log-probs of about 1-10, so fp32 rounding of
    # those (1e-7 each) shows up as 1e-6 absolute, far above 1e-5 relative
    assert later["loss"] == pytest.approx(first["loss"], rel=1e-5, abs=1e-6)
    assert later["grad_norm"] == pytest.approx(first["grad_norm"], rel=1e-4)
    for x, y in zip(*logs, strict=True):  # later steps start from weights that differ by rounding
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-3)
        # the same bound as the weights below: Adam moves each weight about lr whatever its tiny gradient,
        # so rounding differences give later gradient norms ~1e-3 apart (1.7e-3 measured on one CPU model)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=MULTI_PROCESS_RTOL)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    start = load_file(str(Path(bert) / "model.safetensors"))
    moved = sum(((a[k] - start[k]) ** 2).sum() for k in a) ** 0.5
    diff = sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5
    assert moved > 0
    assert diff <= MULTI_PROCESS_RTOL * moved, f"||one - two|| = {diff:.2e}, ||one - start|| = {moved:.2e}"
    assert json.loads((tmp_path / "two" / "report.json").read_text())["processes"] == 2


class NaNObjective(ObjectiveBase):
    name = "nan"
    title = "always NaN"

    def __call__(self, batch, doc_scores, reader, generator):  # type: ignore[no-untyped-def]
        from gumbel_rerank.objectives import LossOutput

        return LossOutput(doc_scores.sum() * float("nan"), {"loss": float("nan")})


def test_non_finite_losses_are_skipped_counted_and_stop_the_run(
    tmp_path: Path, bert_dir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import byte_tokenizer, tiny_llama
    from test_train import small_config

    from gumbel_rerank.objectives import OBJECTIVES
    from gumbel_rerank.readers import make_reader
    from gumbel_rerank.training.loop import NonFiniteLossError, train

    monkeypatch.setitem(OBJECTIVES, "nan", NaNObjective)
    cfg = small_config(
        tmp_path,
        bert_dir,
        "objective.name=nan",
        "eval.generate=false",
        "train.steps=10",
        "train.max_nonfinite_steps=3",
        "train.grad_accum=1",
    )
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    with pytest.raises(NonFiniteLossError, match=r"stopped at step 3: 3 steps had a non-finite loss"):
        train(cfg, progress=False, reader=reader)
    assert "non-finite loss, step skipped (2 so far)" in caplog.text
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == ""  # nothing logged as a real step
    cfg = small_config(
        tmp_path,
        bert_dir,
        "objective.name=nan",
        "eval.generate=false",
        "train.steps=4",
        "train.max_nonfinite_steps=0",
        "train.grad_accum=1",
        "train.checkpoint_every=0",
    )
    result = train(cfg, progress=False, reader=reader, overwrite=True)  # 0 = never stop: every step skipped, counted
    assert result.skipped_steps == 4


NO_SELECTION = ["data.num_val=0", "train.eval_every=0", "train.select=last"]  # the default config's 20 need more data


@pytest.mark.parametrize(
    "override",
    [
        "train.batch_size=0",
        "objective.k=99",
        "objective.tau=-1",
        "train.max_nonfinite_steps=-1",
        "objective.adist_aggregation=sum",
    ],
)
def test_bad_config_is_rejected_before_any_model_loads(
    override: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr("gumbel_rerank.rerankers.Reranker.from_pretrained", no_loading)
    monkeypatch.setattr("gumbel_rerank.readers.load_causal_lm", no_loading)
    args = [
        "train",
        "configs/default.yaml",
        override,
        "data.num_train=4",
        "data.num_eval=2",
        *NO_SELECTION,
        f"train.out_dir={tmp_path / 'run'}",
        "-q",
    ]
    assert main(args) == 2
    assert "error:" in capsys.readouterr().err


# ---- fuzzing: documented errors only --------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.text(max_size=12))
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6
)
SECTIONS = sorted({k.split(".")[0] for k in VALID_KEYS})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from([*SECTIONS, "bogus"]),
        st.dictionaries(st.sampled_from([k.split(".")[1] for k in VALID_KEYS] + ["nope"]), VALUES, max_size=4) | VALUES,
        max_size=4,
    )
)
def test_fuzzed_config_files_load_or_raise_config_error(tmp_path_factory: pytest.TempPathFactory, raw: dict) -> None:  # type: ignore[type-arg]
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with contextlib.suppress(ConfigError):
        assert isinstance(load(path), Config)


@FUZZ
@given(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=3))
def test_fuzzed_overrides_and_yaml_text_raise_only_config_error(item: str, lines: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        parse_override(item)
    with contextlib.suppress(ConfigError):
        load(None, [f"{k}={v}" for k, v in zip(VALID_KEYS, lines, strict=False)])


RECORD_KEYS = [
    "id",
    "_id",
    "question",
    "answer",
    "answers",
    "docs",
    "ctxs",
    "context",
    "supporting_facts",
    "paragraphs",
    "contexts",
    "title",
    "text",
    "paragraph_text",
    "is_supporting",
    "has_answer",
    "sentences",
    "question_text",
    "answers_objects",
    "question_id",
    "type",
    "evidences",
]
RECORDS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(RECORD_KEYS), inner, max_size=6),
    max_leaves=25,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(RECORD_KEYS), RECORDS, max_size=8) | RECORDS)
def test_fuzzed_records_parse_or_raise_data_error(record: object) -> None:
    with contextlib.suppress(DataError):
        assert isinstance(parse_record(record, "fuzz:1"), Example)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_files_read_or_raise_data_error(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    path.write_bytes(blob)
    with contextlib.suppress(DataError):
        list(read_examples(path))
