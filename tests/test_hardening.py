"""Findings from trying the tool as a user and as a security reviewer would; each test failed before
its fix. Serving: isolation, a bounded queue, deadlines, odd bodies and methods, relevance scores.
Files: resume that falls back and never starts over silently, moved runs, file modes. Inputs:
config holes, rerank without answers, empty conversions, non-finite scores."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serving import fake_run

from gumbel_rerank.cli import main
from gumbel_rerank.config import ConfigError, load
from gumbel_rerank.jsonsafe import write_json
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.serving.batcher import BadInputError, BusyError, DeadlineError, MicroBatcher
from gumbel_rerank.serving.export import load_reranker
from gumbel_rerank.serving.http import make_server
from gumbel_rerank.serving.loadtest import post_json
from gumbel_rerank.serving.protocol import Limits, RequestError, parse_request, relevance
from gumbel_rerank.training import checkpoint


class FakeReranker:
    """predict: the length of the doc; fails on a POISON doc; ``delay`` seconds per call."""

    kind, temperature = "cross", 0.05

    def __init__(self, delay: float = 0.0) -> None:
        self.delay, self.calls = delay, 0

    def predict(self, pairs: list[tuple[str, str]], **kwargs: object) -> list[float]:
        self.calls += 1
        time.sleep(self.delay)
        if any("POISON" in d for _, d in pairs):
            raise TypeError("cannot tokenise this")
        return [float(len(d)) for _, d in pairs]


def concurrently(batcher: MicroBatcher, requests: list[list[tuple[str, str]]]) -> list[object]:
    out: list[object] = [None] * len(requests)

    def one(i: int) -> None:
        try:
            out[i] = batcher.score(requests[i])
        except Exception as err:
            out[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_one_poisoned_request_fails_alone_the_others_pooled_with_it_get_their_scores() -> None:
    fake = FakeReranker()
    batcher = MicroBatcher(fake, max_wait_ms=300)  # type: ignore[arg-type]  # long enough to pool all six
    requests = [[("q", "d" * (i + 1))] for i in range(6)]
    requests[2] = [("q", "POISON")]
    results = concurrently(batcher, requests)
    batcher.close()
    assert isinstance(results[2], BadInputError) and "TypeError" in str(results[2])
    assert [r for i, r in enumerate(results) if i != 2] == [[float(i + 1)] for i in range(6) if i != 2]


def test_a_full_queue_is_refused_at_once_and_a_timed_out_request_stops_costing_work() -> None:
    fake = FakeReranker(delay=0.3)
    batcher = MicroBatcher(fake, max_queue=1, max_wait_ms=0, timeout_s=10)  # type: ignore[arg-type]
    results = concurrently(batcher, [[("q", "a")]] * 4)
    assert any(isinstance(r, BusyError) and r.retry_after >= 1 for r in results)
    assert any(r == [1.0] for r in results)
    batcher.close()
    fake = FakeReranker(delay=0.2)
    batcher = MicroBatcher(fake, max_batch_pairs=1, timeout_s=0.3)  # type: ignore[arg-type]  # 20 chunks of 0.2 s
    start = time.monotonic()
    with pytest.raises(DeadlineError, match="deadline"):
        batcher.score([("q", "d")] * 20)
    assert time.monotonic() - start < 1.0
    time.sleep(0.6)
    assert fake.calls <= 5 and batcher.dropped == 1  # the rest of the request was never scored
    assert batcher.score([("q", "ok")]) == [2.0]  # and the next request is served
    batcher.close()


@pytest.fixture
def service(bert_dir: str) -> Iterator[tuple[str, Reranker]]:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    limits = Limits(max_body_bytes=1 << 21, max_documents=50, max_chars=500, read_deadline_s=1.0, max_connections=4)
    srv, batcher = make_server(reranker, "127.0.0.1", 0, limits=limits)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}", reranker
    srv.shutdown()
    srv.server_close()
    batcher.close()


def raw(address: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def test_odd_bodies_get_a_json_reply_never_a_dropped_connection(service: tuple[str, Reranker]) -> None:
    address, _ = service
    for body, status, words in [
        (b'{"query": "q", "documents": ["d"], "top_n": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nests too deeply"),
        (json.dumps({"query": "q", "documents": ["ok", "bad \ud800 text"]}).encode(), 422, "documents[1]"),
    ]:
        got, _, payload = raw(address, "POST", "/rerank", body)
        assert got == status and words in json.loads(payload)["error"]
    got, headers, payload = raw(address, "OPTIONS", "/rerank")
    assert got == 204 and "POST" in headers["Allow"] and payload == b""
    got, headers, payload = raw(address, "HEAD", "/health")
    assert got == 200 and payload == b"" and headers["Content-Type"] == "application/json"


def test_relevance_scores_titles_and_the_v1_route(service: tuple[str, Reranker]) -> None:
    address, reranker = service
    docs = [{"title": "Hamlet", "text": "a play by Shakespeare"}, {"text": "Paris is in France."}]
    status, body = post_json(f"http://{address}/v1/rerank", {"query": "Who wrote Hamlet?", "documents": docs})
    assert status == 200
    expected = reranker.predict(
        [("Who wrote Hamlet?", "Hamlet\na play by Shakespeare"), ("Who wrote Hamlet?", "Paris is in France.")]
    )
    by_index = {r["index"]: r for r in body["results"]}
    assert by_index[0]["score"] == pytest.approx(expected[0], abs=1e-5)  # the title read as `rerank` reads it
    assert all(0 <= r["relevance_score"] <= 1 for r in body["results"])
    bi = Reranker.from_pretrained(reranker.encoder.name_or_path, kind="bi", temperature=0.05)
    assert relevance(bi, 1 / 0.05) == 1.0 and relevance(bi, 0.0) == 0.5 and relevance(bi, -1 / 0.05) == 0.0


def test_slow_drip_clients_are_cut_off_and_connections_are_capped(service: tuple[str, Reranker]) -> None:
    address, _ = service
    host, port = address.split(":")
    drip = socket.create_connection((host, int(port)))
    drip.sendall(b"POST /rerank HTTP/1.1\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{")
    start = time.monotonic()
    for _ in range(4):  # a byte every 0.4 s: each read is on time, the body is not
        time.sleep(0.4)
        try:
            drip.sendall(b" ")
        except OSError:
            break
    drip.settimeout(5)
    reply = drip.recv(4096)
    assert b" 408 " in reply.split(b"\r\n")[0] and time.monotonic() - start < 4
    drip.close()
    idle = [socket.create_connection((host, int(port))) for _ in range(4)]  # hold every slot
    time.sleep(0.2)
    extra = socket.create_connection((host, int(port)))
    extra.settimeout(5)
    assert b" 503 " in extra.recv(4096).split(b"\r\n")[0]
    for s in [*idle, extra]:
        s.close()


def test_serve_refuses_a_bad_or_busy_port_with_a_message(
    bert_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = fake_run(tmp_path, bert_dir, "cross")
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(run), "--port", "99999"])
    assert stop.value.code == 2 and "a port is 0-65535" in capsys.readouterr().err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        assert main(["serve", str(run), "--port", str(taken.getsockname()[1])]) == 2
        assert "pick another --port" in capsys.readouterr().err
    finally:
        taken.close()


def test_the_kind_comes_from_the_export(bert_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = fake_run(tmp_path, bert_dir, "bi")
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    assert load_reranker(out).kind == "bi"  # was: a random cross-encoder head unless --kind bi
    with pytest.raises(ValueError, match="drop --kind cross"):
        load_reranker(out, kind="cross")


def saved_run(tmp_path: Path, bert_dir: str, steps: int = 6) -> Path:
    from conftest import byte_tokenizer, tiny_llama
    from test_train import small_config

    from gumbel_rerank.readers import make_reader
    from gumbel_rerank.training.loop import train

    cfg = small_config(
        tmp_path, bert_dir, "eval.generate=false", f"train.steps={steps}", "train.checkpoint_every=2", "train.grad_accum=1"
    )
    train(cfg, progress=False, reader=make_reader("parallel", tiny_llama(), byte_tokenizer("decoder")))
    return Path(cfg.train.out_dir)


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_never_starts_over_silently(
    tmp_path: Path, bert_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = saved_run(tmp_path, bert_dir)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    (run / "latest").write_text("garbage\x00")  # a corrupt pointer
    assert checkpoint.latest(run) == run / "checkpoint-6"
    weights = run / "checkpoint-6" / "reranker" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING):
        assert checkpoint.latest(run) == run / "checkpoint-4"
    assert "checkpoint-6: reranker/model.safetensors is unreadable" in caplog.text
    (run / "checkpoint-4" / "trainer_state.json").write_text("{not json")
    assert checkpoint.latest(run) is None
    from gumbel_rerank.training.loop import train

    with pytest.raises(ConfigError, match="holds no intact checkpoint"):
        train(load(run / "config.yaml"), progress=False, resume=True)


def test_a_moved_run_resumes_and_a_changed_key_is_named(tmp_path: Path, bert_dir: str) -> None:
    run = saved_run(tmp_path, bert_dir, steps=4)
    moved = tmp_path / "elsewhere"
    run.rename(moved)
    cfg = load(moved / "config.yaml", [f"train.out_dir={moved}", "train.steps=6"])
    checkpoint.check_resumable(cfg, moved)  # out_dir and steps may differ
    with pytest.raises(ConfigError, match=r"train.lr: 0.001 -> 0.5"):
        checkpoint.check_resumable(load(moved / "config.yaml", [f"train.out_dir={moved}", "train.lr=0.5"]), moved)


def test_saving_never_deletes_the_checkpoint_just_written(tmp_path: Path, bert_dir: str) -> None:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=32)
    opt = torch.optim.AdamW(reranker.parameters())
    for step in (4, 6):
        checkpoint.save(tmp_path, step, reranker, opt, {})
    checkpoint.save(tmp_path, 2, reranker, opt, {})  # a run restarted from scratch in the same folder
    assert (tmp_path / "checkpoint-2").is_dir() and checkpoint.latest(tmp_path) is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("reranker.temperature=0", "reranker.temperature must be > 0"),
        ("objective.tau=.inf", "objective.tau must be > 0 and finite"),
        ("objective.kappa=0", "objective.kappa must be > 0"),
        ("train.out_dir=", "train.out_dir must name a folder"),
    ],
)
def test_config_holes_are_closed(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(None, [override])


def test_a_reader_that_does_not_exist_is_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from gumbel_rerank import models

    monkeypatch.setattr(models, "_hub_unreachable", lambda: "huggingface.co does not resolve (no network)")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="cannot load the model 'nonexistent'.*packaged name.*cannot be reached"):
        models.load_causal_lm("nonexistent")
    assert time.perf_counter() - start < 10  # not huggingface_hub's retries with backoff (about 50 s offline)


def test_without_the_hub_a_hub_id_in_the_local_cache_still_loads(
    bert_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from gumbel_rerank import models

    snapshot = tmp_path / "models--org--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.parent.mkdir(parents=True)
    os.symlink(bert_dir, snapshot)
    (tmp_path / "models--org--tiny-bert" / "refs").mkdir()
    (tmp_path / "models--org--tiny-bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_hub_unreachable", lambda: "huggingface.co does not resolve (no network)")
    assert models.resolve("org/tiny-bert") == str(snapshot)
    reranker = Reranker.from_pretrained("org/tiny-bert", kind="bi")
    assert len(reranker.predict([("q", "d")])) == 1
    monkeypatch.setattr(models, "_hub_unreachable", lambda: None)  # with the hub reachable: the id goes to it as given
    assert models.resolve("org/tiny-bert") == "org/tiny-bert"


def test_rerank_needs_no_answers_and_never_writes_a_non_finite_score(bert_dir: str, tmp_path: Path) -> None:
    run, _ = fake_run(tmp_path, bert_dir, "cross")
    records = [{k: v for k, v in ex.to_json().items() if k != "answers"} for ex in make_examples()]
    questions = tmp_path / "mine.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["rerank", str(run), "--input", str(questions), "--top-k", "2", "--output", str(tmp_path / "top"), "-q"]) == 0
    assert len((tmp_path / "top.run").read_text().splitlines()) == 2 * len(records)

    from gumbel_rerank.serving.rerank_file import rerank_file

    broken = FakeReranker()
    broken.predict = lambda pairs, **kw: [float("inf")] * len(pairs)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="non-finite score"):
        rerank_file(broken, questions, tmp_path / "bad")  # type: ignore[arg-type]


def test_data_convert_of_nothing_exits_non_zero_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in [
        ("empty.jsonl", ""),
        ("wrong.json", json.dumps([{"foo": 1}, {"bar": 2}])),
        ("deep.json", "[" * 100_000 + "]" * 100_000),
    ]:
        src, out = tmp_path / name, tmp_path / f"{name}.out.jsonl"
        src.write_text(text)
        assert main(["data", "convert", str(src), "--output", str(out)]) == 2, name
        assert not out.exists()
    err = capsys.readouterr().err
    assert "no question could be converted" in err and "unknown record format" in err and "not a dataset file" in err


def test_files_get_the_usual_permissions(tmp_path: Path, bert_dir: str) -> None:
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": float("nan")})
        reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=32)
        ckpt = checkpoint.save(tmp_path / "run", 1, reranker, torch.optim.AdamW(reranker.parameters()), {})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644 and json.loads((tmp_path / "a.json").read_text()) == {"x": None}
    assert ckpt.stat().st_mode & 0o777 == 0o755 and (tmp_path / "run" / "latest").stat().st_mode & 0o777 == 0o644


def test_export_into_its_own_run_fails_and_the_run_is_intact(bert_dir: str, tmp_path: Path) -> None:
    run, _ = fake_run(tmp_path, bert_dir, "cross")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert main(["export", str(run), str(run)]) == 2
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
DOC = st.text(max_size=60) | st.fixed_dictionaries({"text": st.text(max_size=60)}, optional={"title": JSON, "id": JSON})
REQUEST = st.fixed_dictionaries(
    {"query": st.text(max_size=60) | JSON, "documents": st.lists(DOC, max_size=8) | JSON},
    optional={"top_n": JSON | st.integers(), "return_documents": JSON, "model": JSON, "x": JSON},
)
BODIES = (
    st.binary(max_size=200)
    | JSON.map(lambda v: json.dumps(v).encode())
    | REQUEST.map(lambda v: json.dumps(v).encode())
    | st.integers(1, 6000).map(lambda n: b"[" * n + b"]" * n)
)


@settings(max_examples=300, deadline=None)
@given(BODIES)
def test_fuzzed_bodies_get_a_documented_4xx_or_a_valid_request(body: bytes) -> None:
    limits = Limits(max_documents=5, max_chars=50)
    try:
        query, docs, top_n, ret = parse_request(body, limits)
    except RequestError as err:
        assert 400 <= err.status < 500 and str(err)
        return
    assert query.strip() and 1 <= len(docs) <= 5 and all(isinstance(d, str) and len(d) <= 50 for d in docs)
    assert top_n is None or top_n >= 1
    assert isinstance(ret, bool)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(BODIES)
def test_fuzzed_bodies_over_http_always_get_a_json_reply(service: tuple[str, Reranker], body: bytes) -> None:
    address, _ = service
    status, _, payload = raw(address, "POST", "/rerank", body)
    assert status in (200, 400, 413, 422) and isinstance(json.loads(payload), dict)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(BODIES | JSON.map(lambda v: "\n".join(json.dumps(x) for x in (v if isinstance(v, list) else [v])).encode()))
def test_fuzzed_data_files_raise_only_data_errors(tmp_path: Path, content: bytes) -> None:
    from gumbel_rerank.data import convert
    from gumbel_rerank.data.schema import DataError

    path = tmp_path / "fuzz.json"
    path.write_bytes(content)
    try:
        loaded = convert.load(path)
    except DataError as err:
        assert str(path) in str(err)
        return
    assert all(isinstance(e, DataError) for e in loaded.errors)


def test_the_model_card_claims_only_real_hub_ids() -> None:
    from gumbel_rerank.serving.card import card_data, hub_id_or_none

    assert hub_id_or_none("all-minilm-l6-v2") == "sentence-transformers/all-MiniLM-L6-v2"  # a packaged alias
    assert hub_id_or_none("synthetic") is None and hub_id_or_none("../shared/data/hotpotqa/x.jsonl") is None
    assert hub_id_or_none("hotpotqa/hotpot_qa") == "hotpotqa/hotpot_qa"

    class Cross:
        kind = "cross"

    data = card_data(
        Cross(),
        {"reranker": {"model": "all-minilm-l6-v2"}, "data": {"source": "hotpotqa/hotpot_qa"}},  # type: ignore[arg-type]
        {"after": {"R@5": 0.8, "bridge_R@5": float("nan")}},
    )
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.datasets == ["hotpotqa/hotpot_qa"]
    assert [(r.metric_type, r.dataset_type) for r in data.eval_results] == [("r@5", "hotpotqa/hotpot_qa")]  # NaN left out
