"""The second round of a user's trial (issue "Every command survives every input"): each finding's
reproduction, which failed before its fix, then a fuzz of every data-reading entry point and of the
HTTP service's framing. Every refusal is one line that names the file and the record or key, exits 2,
and leaves every existing output as it was."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_hardening import saved_run, service  # noqa: F401  (service: a fixture)
from test_serving import fake_run

from gumbel_rerank import evaluate
from gumbel_rerank.cli import main
from gumbel_rerank.config import ConfigError, load
from gumbel_rerank.config.schema import DataConfig
from gumbel_rerank.data import DataError, Doc, Example, load_splits, read_examples
from gumbel_rerank.data.schema import write_jsonl
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.training import checkpoint
from gumbel_rerank.training.run_folder import RunLock, claim

GOOD = {"id": "q0", "question": "Q?", "answers": ["A"], "docs": [{"id": "d0", "text": "x"}, {"id": "d1", "text": "y"}]}


def record(**changes: Any) -> dict[str, Any]:
    """GOOD with ``changes``; ``doc0_<key>`` changes the first doc's key."""
    out = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key.startswith("doc0_"):
            out["docs"][0][key.removeprefix("doc0_")] = value
        else:
            out[key] = value
    return out


def write(path: Path, *records: object) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))  # lone surrogates become \ud800, NaN NaN
    return path


def cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> int:
    """``main(argv)`` with what earlier steps printed drained first (so the error read after is its own)."""
    capsys.readouterr()
    return main(argv)


def one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    text = capsys.readouterr().err.strip()
    assert "Traceback" not in text, text
    err = text.splitlines()[-1]  # after at most transformers' own "Loading weights" bars
    assert err.startswith("gumbel-rerank: error: ") and text.count("gumbel-rerank: error") == 1, text
    for word in words:
        assert word in err, (word, err)
    return err


SURROGATES = [
    ("question", record(question="Q \ud800?")),
    ("docs[0].text", record(doc0_text="x \ud800")),
    ("docs[0].title", record(doc0_title="T \udfff")),
    ("answers[0]", record(answers=["A \ud800"])),
]


@pytest.mark.parametrize(("field", "bad"), SURROGATES, ids=[f for f, _ in SURROGATES])
def test_a_lone_surrogate_is_a_data_error_naming_file_line_and_field(tmp_path: Path, field: str, bad: dict[str, Any]) -> None:
    sur = write(tmp_path / "sur.jsonl", GOOD, bad)
    with pytest.raises(DataError, match=re.escape(f"sur.jsonl:2: {field} holds \\ud")):
        list(read_examples(sur))


def test_a_surrogate_stops_rerank_train_eval_and_evaluate_before_any_model_loads(
    tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sur = write(tmp_path / "sur.jsonl", record(doc0_text="x \ud800"))
    loads: list[str] = []
    real = Reranker.from_pretrained.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Reranker, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append("r") or real(cls, *a, **k)))
    out = tmp_path / "P"
    assert cli(capsys, ["rerank", bert_dir, "--kind", "cross", "--input", str(sur), "--output", str(out)]) == 2
    one_line_error(capsys, "sur.jsonl:1", "docs[0].text")
    assert not list(tmp_path.glob("P*")) and loads == []  # no 0-byte P.jsonl, and the model never loaded
    run_dir = tmp_path / "run"
    assert cli(capsys, ["train", "configs/default.yaml", f"data.source={sur}", f"train.out_dir={run_dir}"]) == 2
    one_line_error(capsys, "sur.jsonl:1", "docs[0].text")
    assert not run_dir.exists() and loads == []  # no partial run folder
    run, reranker = fake_run(tmp_path, bert_dir, "cross")
    assert cli(capsys, ["eval", str(run), f"data.eval_source={sur}", "eval.generate=false"]) == 2
    one_line_error(capsys, "sur.jsonl:1")
    assert not (run / "eval").exists()
    with pytest.raises(DataError, match=r"sur\.jsonl:1: docs\[0\]\.text"):
        evaluate(reranker, sur)


def test_data_convert_keeps_an_existing_output_when_a_record_is_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "existing.jsonl"
    existing.write_bytes(b"precious\n" * 200)
    for bad in (record(doc0_text="x \ud800"), record(answers=["\ud800"])):
        sur = write(tmp_path / "sur.jsonl", bad)
        assert cli(capsys, ["data", "convert", str(sur), "--output", str(existing)]) == 2
        one_line_error(capsys, "sur.jsonl:1")
        assert existing.read_bytes() == b"precious\n" * 200
    # the writer itself is atomic: an Example built in Python with a surrogate leaves the file as it was
    ex = Example("q", "Q?", ("A",), (Doc("d", "", "ok"), Doc("e", "", "bad \ud800")))
    with pytest.raises(DataError, match="nothing written"):
        write_jsonl([Example("p", "P?", ("B",), (Doc("d", "", "fine"),)), ex], existing)
    assert existing.read_bytes() == b"precious\n" * 200 and [p.name for p in tmp_path.glob(".*tmp")] == []


WRONG_TYPES = [
    ("question", record(question=None), "question must be a string, got null"),
    ("question", record(question=float("nan")), "question must be a string, got NaN"),
    ("question", record(question=123), "question must be a string, got 123"),
    ("docs[0].text", record(doc0_text=float("inf")), "docs[0].text must be a string, got Infinity"),
    ("docs[0].text", record(doc0_text=4.5), "docs[0].text must be a string, got 4.5"),
    ("docs[0].text", record(doc0_text={"a": 1}), 'docs[0].text must be a string, got {"a": 1}'),
    ("docs[0].is_gold", record(doc0_is_gold=float("nan")), "docs[0].is_gold must be true or false, got NaN"),
    ("answers", record(answers=[None]), "answers[0] must be a string, got null"),
]


@pytest.mark.parametrize(("field", "bad", "message"), WRONG_TYPES, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(WRONG_TYPES)])
def test_wrong_types_are_refused_not_turned_into_text(
    tmp_path: Path, field: str, bad: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "typed.jsonl", bad)
    with pytest.raises(DataError) as err:
        list(read_examples(path))
    assert str(err.value).startswith(f"{path}:1: {message}")
    assert cli(capsys, ["data", "convert", str(path), "--output", str(tmp_path / "out.jsonl")]) == 2
    one_line_error(capsys, "typed.jsonl:1", field)
    assert not (tmp_path / "out.jsonl").exists()


def test_integer_ids_and_null_titles_stay_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.jsonl", record(id=7, doc0_title=None, doc0_is_gold=1))
    (ex,) = read_examples(path)
    assert ex.id == "7" and ex.docs[0].title == "" and ex.docs[0].is_gold


def test_a_folder_where_a_file_belongs_and_an_occupied_run_folder_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path / "good.jsonl", GOOD)
    folder = tmp_path / "out"
    folder.mkdir()
    assert cli(capsys, ["data", "convert", str(good), "--output", str(folder)]) == 2
    one_line_error(capsys, "is a folder")
    (tmp_path / "cfg.yaml").mkdir()
    assert cli(capsys, ["train", str(tmp_path / "cfg.yaml")]) == 2
    one_line_error(capsys, "cfg.yaml", "is a folder")
    (tmp_path / "file").write_text("x")
    assert cli(capsys, ["train", "configs/default.yaml", f"train.out_dir={tmp_path / 'file'}"]) == 2
    one_line_error(capsys, "is a file")


def test_unwritable_folders_are_one_line_errors(
    tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root a read-only folder is still writable, so the refusal is simulated where it happens."""
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ConfigError, match="no permission to write there"):
        claim(tmp_path / "ro" / "run", resume=False, overwrite=False)
    monkeypatch.undo()
    run, _ = fake_run(tmp_path, bert_dir, "cross")
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert cli(capsys, ["export", str(run), str(tmp_path / "ro" / "export")]) == 2
    one_line_error(capsys, str(tmp_path / "ro"), "Permission denied")


def test_config_floats_must_be_finite_and_a_non_utf8_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for override in ("train.lr=.inf", "train.weight_decay=.nan", "objective.temperature_gold=.inf"):
        with pytest.raises(ConfigError, match="must be"):
            load("configs/default.yaml", [override])
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("train:\n  steps: 2\n", encoding="utf-16")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    for path in (utf16, binary):
        assert cli(capsys, ["train", str(path)]) == 2
        one_line_error(capsys, path.name, "UTF-8")


def test_training_into_a_run_is_refused_unless_resumed_or_overwritten(tmp_path: Path, bert_dir: str) -> None:
    from conftest import byte_tokenizer, tiny_llama

    from gumbel_rerank.readers import make_reader
    from gumbel_rerank.training.loop import train

    run = saved_run(tmp_path, bert_dir)  # a finished run with checkpoint-4 and checkpoint-6
    cfg = load(run / "config.yaml", ["train.steps=2"])
    (run / "notes.txt").write_text("mine")  # a user's own file in the run folder
    log = (run / "metrics.jsonl").read_bytes()
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    with pytest.raises(ConfigError, match=r"already holds a run .*--resume .*--overwrite"):
        train(cfg, progress=False, reader=reader)
    assert (run / "metrics.jsonl").read_bytes() == log and checkpoint.latest(run) == run / "checkpoint-6"
    train(cfg, progress=False, reader=reader, overwrite=True)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]  # the old run's are gone
    assert checkpoint.latest(run) == run / "checkpoint-2" and (run / "notes.txt").read_text() == "mine"
    lock = RunLock(run)  # a second training into the same folder while one runs
    try:
        with pytest.raises(ConfigError, match="another training is writing into this folder"):
            claim(run, resume=True, overwrite=False)
    finally:
        lock.release()
    claim(run, resume=True, overwrite=False).release()  # free again once the first has ended


def test_a_checkpoint_whose_state_lacks_keys_is_skipped_with_a_warning(
    tmp_path: Path, bert_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = saved_run(tmp_path, bert_dir)
    (run / "checkpoint-6" / "trainer_state.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        assert checkpoint.latest(run, checkpoint.RESUMABLE) == run / "checkpoint-4"
    assert "checkpoint-6: trainer_state.json lacks step, queue" in caplog.text
    (run / "checkpoint-4" / "optimizer.json").write_text('{"state": {}}')
    assert checkpoint.latest(run, checkpoint.RESUMABLE) is None


def test_saved_weights_follow_the_umask(tmp_path: Path, bert_dir: str) -> None:
    old = os.umask(0o022)
    try:
        Reranker.from_pretrained(bert_dir, kind="cross", max_length=32).save_pretrained(tmp_path / "saved")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "saved").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}


# ---- HTTP framing, over a raw socket -------------------------------------------------------------


def exchange(address: str, data: bytes, *, pause: float = 0.0, rest: bytes = b"", timeout: float = 8.0) -> tuple[bytes, bool]:
    """Send ``data`` (then ``rest`` after ``pause`` s); everything the server sends, and whether it closed."""
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
        if rest:
            s.sendall(rest)
        chunks, closed = [], False
        try:
            while True:
                part = s.recv(65536)
                if not part:
                    closed = True
                    break
                chunks.append(part)
        except TimeoutError:
            pass
    return b"".join(chunks), closed


def replies(data: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """The responses in a byte stream: (status, headers, parsed JSON body or the raw bytes)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        body, data = data[:n], data[n:]
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body
        out.append((status, headers, parsed))
    return out


BODY = json.dumps({"query": "q", "documents": ["a", "bb"]}).encode()


def post(body: bytes = BODY, extra: str = "", length: bool = True) -> bytes:
    cl = f"Content-Length: {len(body)}\r\n" if length else ""
    return f"POST /rerank HTTP/1.1\r\nHost: x\r\n{cl}{extra}\r\n".encode() + body


def test_the_smuggling_reproduction_gets_one_reply_and_a_closed_connection(service: tuple[str, Reranker]) -> None:  # noqa: F811
    address, _ = service
    smuggled = b"DELETE /rerank HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed = exchange(address, post(smuggled, "Transfer-Encoding: chunked\r\n", length=False))
    ((status, headers, body),) = replies(data)
    assert status == 411 and "chunked" in body["error"] and headers["connection"] == "close" and closed
    data, closed = exchange(address, post(BODY, "Transfer-Encoding: chunked\r\n"))  # both framings
    ((status, headers, body),) = replies(data)
    assert status == 400 and "Transfer-Encoding" in body["error"] and closed
    data, closed = exchange(address, post(BODY, f"Content-Length: {len(BODY)}\r\n"))  # two lengths
    assert [r[0] for r in replies(data)] == [400] and closed


def test_pipelined_requests_each_get_their_reply_and_a_get_body_is_never_parsed(service: tuple[str, Reranker]) -> None:  # noqa: F811
    address, _ = service
    data, _ = exchange(address, post() + post(extra="Connection: close\r\n"))
    assert [(r[0], len(r[2]["results"])) for r in replies(data)] == [(200, 2), (200, 2)]
    get = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 38\r\n\r\n" + b"DELETE /rerank HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed = exchange(address, get)
    assert [r[0] for r in replies(data)] == [200] and closed


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"garbage\r\n\r\n", 400),
        (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 505),
        (b"GET /" + b"a" * 80_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", 431),
    ],
    ids=["trace", "connect", "unknown-method", "garbage", "http-9.9", "long-uri", "200-headers"],
)
def test_every_refusal_of_http_server_is_json(service: tuple[str, Reranker], request_bytes: bytes, status: int) -> None:  # noqa: F811
    data, closed = exchange(service[0], request_bytes)
    ((got, headers, body),) = replies(data)
    assert got == status and headers["content-type"] == "application/json" and body["status"] == status and closed


def test_a_stalled_body_gets_a_408_json_reply(service: tuple[str, Reranker]) -> None:  # noqa: F811
    t0 = time.monotonic()
    data, closed = exchange(service[0], post(b"x" * 8, "", length=False).replace(b"\r\n\r\n", b"\r\nContent-Length: 50\r\n\r\n"))
    ((status, _, body),) = replies(data)
    assert status == 408 and "1 s" in body["error"] and closed and time.monotonic() - t0 < 5


FRAMINGS = {
    "valid": (post(), 200, False),
    "chunked": (post(b"5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n", length=False), 411, True),
    "both": (post(BODY, "Transfer-Encoding: chunked\r\n"), 400, True),
    "two-lengths": (post(BODY, "Content-Length: 3\r\n"), 400, True),
    "signed-length": (post(BODY, "", length=False).replace(b"\r\n\r\n", b"\r\nContent-Length: +40\r\n\r\n", 1), 400, True),
    "no-length": (post(b"", "", length=False), 411, True),
    "bad-line": (b"GET\r\n\r\n", 400, True),
    "bad-version": (b"GET /health HTTP/2.7\r\n\r\n", 505, True),
    "get-with-body": (b"GET /health HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ", 200, True),
    "last": (b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 200, True),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(set(FRAMINGS) - {"last"})), max_size=4))
def test_fuzzed_framing_gets_one_json_reply_per_request_and_closes_after_an_error(
    service: tuple[str, Reranker],  # noqa: F811
    kinds: list[str],
) -> None:
    kinds = [*kinds, "last"]  # a final request asks the server to close, so every exchange ends
    stop = next(i for i, k in enumerate(kinds) if FRAMINGS[k][2])
    data, closed = exchange(service[0], b"".join(FRAMINGS[k][0] for k in kinds))
    got = replies(data)
    assert [r[0] for r in got] == [FRAMINGS[k][1] for k in kinds[: stop + 1]], kinds
    assert all(r[1]["content-type"] == "application/json" for r in got) and closed


# ---- every data-reading entry point, fuzzed -------------------------------------------------------

BAD_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(max_size=4).map(lambda s: s + "\ud800"),
)
BAD_FLAG = st.one_of(st.none(), st.floats(allow_nan=True), st.text(max_size=3), st.integers(min_value=2), st.lists(st.booleans()))
BAD_RECORD = st.one_of(
    BAD_TEXT.map(lambda v: record(question=v)),
    BAD_TEXT.map(lambda v: record(answers=[v])),
    BAD_TEXT.map(lambda v: record(doc0_text=v)),
    BAD_TEXT.filter(lambda v: v is not None).map(lambda v: record(doc0_title=v)),
    BAD_TEXT.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)).map(lambda v: record(id=v)),
    BAD_FLAG.map(lambda v: record(doc0_is_gold=v)),
    BAD_FLAG.map(lambda v: record(doc0_has_answer=v)),
    st.sampled_from(
        [
            record(docs={"d0": "x"}),
            record(docs=[["d0", "x"]]),
            record(answers="A"),
            [GOOD],
            record(docs=[{"id": "d0"}]),
            {"question": "Q?", "answer": "A", "context": [["t", [1, 2]]], "supporting_facts": []},
            {"question": "Q?", "answer": None, "context": [["t", ["s"]]], "supporting_facts": []},
            {"id": "m", "question": "Q?", "answer": "A", "paragraphs": [{"paragraph_text": 4.5}]},
            {"question": "Q?", "answers": ["A"], "ctxs": [{"text": "x", "isgold": "yes"}]},
        ]
    ),
)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory, bert_dir: str) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("fuzz")
    run, reranker = fake_run(tmp, bert_dir, "cross")
    existing = tmp / "existing.jsonl"
    existing.write_text("keep me\n")
    return {"tmp": tmp, "run": run, "reranker": reranker, "existing": existing, "bert": bert_dir}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=BAD_RECORD, position=st.integers(0, 2))
@example(bad=[GOOD], position=0)  # a file that opens with "[" yet is JSON Lines: refused at line 1, not line 2
def test_fuzzed_records_are_refused_by_every_reader_with_file_and_line(
    targets: dict[str, Any], capsys: pytest.CaptureFixture[str], bad: Any, position: int
) -> None:
    tmp: Path = targets["tmp"]
    records = [GOOD, GOOD]
    records.insert(position, bad)
    path = tmp / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    where = f"fuzz.jsonl:{position + 1}"
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p != path}

    with pytest.raises(DataError, match=where):
        list(read_examples(path))
    with pytest.raises(DataError, match=where):  # train's and compare's loader
        load_splits(DataConfig(source=str(path), num_train=2, num_eval=0))
    with pytest.raises(DataError, match=where):
        evaluate(targets["reranker"], path)
    out = tmp / "ranked"
    commands = [
        ["rerank", targets["bert"], "--kind", "cross", "--input", str(path), "--output", str(out)],
        ["eval", str(targets["run"]), f"data.eval_source={path}", "eval.generate=false"],
        ["compare", "configs/default.yaml", f"data.source={path}", f"--out={tmp / 'cmp'}", "--objectives=gumbel"],
    ]
    for argv in commands:
        assert cli(capsys, argv) == 2, argv
        one_line_error(capsys, where)
    after = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file() and p != path}
    assert after == before  # no output written, none changed
    # data convert keeps the good records and reports the bad one with its place (nothing is dropped silently)
    converted = tmp / "converted.jsonl"
    assert cli(capsys, ["data", "convert", str(path), "--output", str(converted)]) == 0
    assert "skipped 1" in (printed := capsys.readouterr().out) and f"e.g. {path}:{position + 1}: " in printed
    assert len(converted.read_text().splitlines()) == 2
    converted.unlink()


def test_probe_adapt_and_pool_conversion_refuse_bad_data_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sur = write(tmp_path / "sur.jsonl", record(question="Q \ud800?"))
    for argv in (
        ["probe", "configs/default.yaml", f"data.source={sur}"],
        ["adapt-reader", "configs/default.yaml", f"data.source={sur}", "--out", str(tmp_path / "adapter")],
    ):
        assert main(argv) == 2, argv
        one_line_error(capsys, "sur.jsonl:1", "question")
    assert not (tmp_path / "adapter").exists()
    question_only = write(tmp_path / "q.jsonl", {"id": "q", "question": "Q \ud800?", "answers": ["A"]})
    assert cli(capsys, ["data", "convert", str(question_only), "--pool", "3", "--output", str(tmp_path / "pooled.jsonl")]) == 2
    one_line_error(capsys, "q.jsonl:1", "question")
    assert not (tmp_path / "pooled.jsonl").exists()


def test_a_trained_cross_encoder_run_serves_within_its_queue_and_connection_limits(tmp_path: Path, bert_dir: str) -> None:
    import threading

    from gumbel_rerank.serving.export import load_reranker
    from gumbel_rerank.serving.http import make_server
    from gumbel_rerank.serving.protocol import Limits

    run, _ = fake_run(tmp_path, bert_dir, "cross")
    reranker = load_reranker(str(run))
    assert reranker.kind == "cross"
    srv, batcher = make_server(reranker, "127.0.0.1", 0, limits=Limits(max_queue=1, max_connections=1, read_deadline_s=2.0))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{srv.server_address[1]}"
    try:
        data, _ = exchange(address, post(extra="Connection: close\r\n"))
        ((status, _, body),) = replies(data)
        assert status == 200 and all(0.0 <= r["relevance_score"] <= 1.0 for r in body["results"])
        host, port = address.split(":")
        time.sleep(0.5)  # the first exchange's handler thread gives its slot back after replying
        with socket.create_connection((host, int(port)), timeout=5) as held:  # holds the only connection slot
            held.sendall(b"POST /rerank HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
            time.sleep(0.5)
            data, closed = exchange(address, post())
            ((status, _, body),) = replies(data)
            assert status == 503 and "too many connections" in body["error"] and closed
    finally:
        srv.shutdown()
        srv.server_close()
        batcher.close()


def test_a_cross_encoder_scores_a_query_longer_than_its_max_length(bert_dir: str) -> None:
    """Found while fuzzing: truncating only the doc failed when the query alone filled max_length."""
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=32)
    long_query = "why " * 100
    assert len(reranker.predict([(long_query, "a doc"), ("short?", "a doc")])) == 2
    ex = Example("q", long_query, ("A",), (Doc("d0", "", "one"), Doc("d1", "", "two")))
    assert reranker.score([ex]).shape == (1, 2)
