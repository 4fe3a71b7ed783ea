"""The training loop and the CLI end to end on tiny models: outputs, frozen reader, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import byte_tokenizer, tiny_llama

from gumbel_rerank.cli import main
from gumbel_rerank.config import ConfigError, load
from gumbel_rerank.evaluation.evaluate import score_all
from gumbel_rerank.readers import make_reader
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.training import checkpoint
from gumbel_rerank.training.loop import train

NO_SELECTION = ["data.num_val=0", "train.eval_every=0", "train.select=last"]  # configs/default.yaml's need 20+ questions


def small_config(tmp_path: Path, bert_dir: str, *extra: str):  # type: ignore[no-untyped-def]
    return load(
        None,
        [
            "data.num_train=8",
            "data.num_eval=4",
            "data.num_docs=5",
            "objective.k=2",
            "train.steps=4",
            "train.batch_size=2",
            "train.grad_accum=2",
            "train.checkpoint_every=2",
            "train.lr=1e-3",
            "eval.max_new_tokens=3",
            f"train.out_dir={tmp_path / 'run'}",
            f"reranker.model={bert_dir}",
            "reranker.max_length=96",
            *extra,
        ],
    )


def test_train_updates_reranker_only_and_writes_the_run(tmp_path: Path, bert_dir: str) -> None:
    cfg = small_config(tmp_path, bert_dir)
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=96)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    reader_before = {k: v.clone() for k, v in reader.model.state_dict().items()}
    ranker_before = {k: v.clone() for k, v in reranker.state_dict().items()}
    result = train(cfg, progress=False, reranker=reranker, reader=reader)
    run = result.run_dir
    assert (run / "config.yaml").exists() and load(run / "config.yaml") == cfg
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert all(np_finite(x["loss"]) and "hard_loss" in x and "tau" in x for x in lines)
    assert checkpoint.latest(run) == run / "checkpoint-4" and (run / "checkpoint-2").exists()
    assert all(torch.equal(v, reader_before[k]) for k, v in reader.model.state_dict().items())
    assert any(not torch.equal(v, ranker_before[k]) for k, v in reranker.state_dict().items())
    assert {"R@2", "RR", "bridge_R@2", "EM", "F1"} <= set(result.after)
    # the saved reranker reloads (safetensors) and scores exactly like the trained one
    from gumbel_rerank.data import load_splits

    _, held_out = load_splits(cfg.data)
    reloaded = Reranker.from_pretrained(str(run / "reranker"))
    assert score_all(reloaded, held_out) == score_all(reranker, held_out)
    assert not list(run.glob("**/*.bin")) and not list(run.glob("**/*.pt"))


def np_finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def test_same_seed_same_reranker(tmp_path: Path, bert_dir: str) -> None:
    def run(sub: str) -> dict[str, torch.Tensor]:
        cfg = small_config(tmp_path / sub, bert_dir, "eval.generate=false", "train.checkpoint_every=0")
        reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=96)
        reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
        train(cfg, progress=False, reranker=reranker, reader=reader)
        return reranker.state_dict()

    a, b = run("a"), run("b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_atomic_checkpoint_survives_a_crash_mid_save(tmp_path: Path, bert_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=32)
    opt = torch.optim.AdamW(reranker.parameters())
    good = checkpoint.save(tmp_path, 1, reranker, opt, {})

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("gumbel_rerank.training.checkpoint.save_file", boom)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, reranker, opt, {})
    assert checkpoint.latest(tmp_path) == good
    assert Reranker.from_pretrained(str(good / "reranker")) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["objective.k=9"], "lower objective.k to at most 5"),
        (["objective.kapa=2"], "did you mean 'objective.kappa'"),
        (["reader.model=./no/such/reader"], "does not exist"),
        (["data.source=/no/such/file.jsonl"], "does not exist"),
    ],
)
def test_cli_bad_input_exits_2_with_the_fix(
    args: list[str], message: str, tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        *NO_SELECTION,
        "data.num_train=4",
        "data.num_eval=2",
        "data.num_docs=5",
        "objective.k=2",
        f"reranker.model={bert_dir}",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    assert main(["train", "configs/default.yaml", *common, *args, "-q"]) == 2
    assert message in capsys.readouterr().err


def test_cli_layout_the_model_cannot_do(tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    reader_dir = tmp_path / "llama"
    tiny_llama().save_pretrained(reader_dir)
    byte_tokenizer("decoder").save_pretrained(reader_dir)
    args = [
        *NO_SELECTION,
        "data.num_train=4",
        "data.num_eval=2",
        "data.num_docs=5",
        "objective.k=2",
        f"reranker.model={bert_dir}",
        f"reader.model={reader_dir}",
        "reader.layout=fid",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    assert main(["train", "configs/default.yaml", *args, "-q"]) == 2  # the default's fp16 doc cache is parallel-only
    assert "with another layout set them empty: reader.doc_dtype= reader.doc_cache_dtype=" in capsys.readouterr().err
    assert main(["train", "configs/default.yaml", *args, "reader.doc_dtype=", "reader.doc_cache_dtype=", "-q"]) == 2
    assert "use layout 'parallel' or 'sequential'" in capsys.readouterr().err


def test_bad_data_records_name_file_and_line(tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {"id": "a", "question": "q?", "answers": ["x"], "docs": [{"id": "1", "text": "t"}]}
    rows = [good, {**good, "id": "b", "answers": [""]}, {**good, "id": "c", "docs": []}]
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    args = [
        *NO_SELECTION,
        f"data.source={bad}",
        "data.num_train=1",
        "data.num_eval=0",
        "objective.k=1",
        f"reranker.model={bert_dir}",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    assert main(["train", "configs/default.yaml", *args, "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "empty answer" in err


def test_cli_eval_compares_zero_shot_and_trained(tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small_config(tmp_path, bert_dir, "eval.generate=false", "train.checkpoint_every=0")
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=96)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    result = train(cfg, progress=False, reranker=reranker, reader=reader)
    capsys.readouterr()
    assert main(["eval", str(result.run_dir), "eval.generate=false", "--json", str(tmp_path / "m.json")]) == 0
    assert "| R@2 |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["after"]["R@2"] == pytest.approx(result.after["R@2"])
    assert saved["before"]["R@2"] == pytest.approx(result.before["R@2"])


def test_report_to_tensorboard_logs_every_step_and_every_eval(tmp_path: Path, bert_dir: str) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small_config(
        tmp_path,
        bert_dir,
        "eval.generate=false",
        "train.steps=4",
        "train.checkpoint_every=0",
        "train.grad_accum=1",
        "train.report_to=[tensorboard]",
        "data.num_val=2",
        "train.eval_every=2",
    )
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    train(cfg, progress=False, reader=reader)
    events = list((tmp_path / "run").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "hard_loss", "mask_sum", "tau", "lr", "grad_norm", "seconds", "val_loss"} <= tags
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("val_loss")] == [0, 2, 4]  # the start and every eval
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([x["loss"] for x in logged if "val_loss" not in x])
    with pytest.raises(ConfigError, match="report_to may name"):
        load(None, ["train.report_to=[neptune]"])


@pytest.mark.parametrize("dropout", [True, False])
def test_train_dropout_sets_the_mode_the_reranker_trains_in(tmp_path: Path, bert_dir: str, dropout: bool) -> None:
    """``train.dropout: false`` trains the reranker in eval mode (no dropout noise on top of the
    objective's); every training forward sees the mode the config asks for."""
    cfg = small_config(tmp_path, bert_dir, f"train.dropout={str(dropout).lower()}", "eval.generate=false")
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=96)
    modes: list[bool] = []
    reranker.encoder.register_forward_pre_hook(
        lambda module, args: modes.append(module.training) if torch.is_grad_enabled() else None
    )
    train(cfg, progress=False, reranker=reranker, reader=make_reader("parallel", tiny_llama(), byte_tokenizer("decoder")))
    assert modes and set(modes) == {dropout}
