"""The trained reranker outside gumbel-rerank: rank API, sentence-transformers export with a model
card, the batch CLI and the /rerank service (real HTTP client on loopback, limits, load test)."""

from __future__ import annotations

import http.client
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sentence_transformers as st
import torch
import yaml
from conftest import make_examples

from gumbel_rerank.cli import main
from gumbel_rerank.config import dump, load
from gumbel_rerank.data.schema import write_jsonl
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.serving.http import make_server
from gumbel_rerank.serving.loadtest import load_test, post_json
from gumbel_rerank.serving.protocol import Limits

QUERY = "Who wrote the play?"
DOCS = ["The play was written by Ann.", "Bananas are yellow.", "Ann is a writer.", "Bananas are yellow."]


def fake_run(tmp_path: Path, bert_dir: str, kind: str) -> tuple[Path, Reranker]:
    """A run directory as `train` leaves it: config.yaml, report.json and reranker/."""
    run = tmp_path / f"run-{kind}"
    reranker = Reranker.from_pretrained(bert_dir, kind=kind, max_length=64, temperature=0.1)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in reranker.parameters():
            p.add_(0.01 * torch.randn_like(p))  # "trained": not the starting weights
    reranker.save_pretrained(run / "reranker")
    cfg = load(None, [f"reranker.model={bert_dir}", f"reranker.kind={kind}", "objective.k=3", "objective.tau=0.4"])
    (run / "config.yaml").write_text(dump(cfg))
    (run / "report.json").write_text(json.dumps({"before": {"R@2": 0.5}, "after": {"R@2": 0.75}}))
    return run, reranker


def test_rank_matches_cross_encoder_rank_shape_and_keeps_ties_in_order(bert_dir: str, tmp_path: Path) -> None:
    run, reranker = fake_run(tmp_path, bert_dir, "cross")
    ours = reranker.rank(QUERY, DOCS, return_documents=True)
    assert [set(r) for r in ours] == [{"corpus_id", "score", "text"}] * len(DOCS)
    assert [r["score"] for r in ours] == sorted((r["score"] for r in ours), reverse=True)
    ties = [r["corpus_id"] for r in ours if r["text"] == DOCS[1]]
    assert ties == [1, 3]  # equal scores: input order
    assert reranker.rank(QUERY, DOCS, top_k=2) == [{k: v for k, v in r.items() if k != "text"} for r in ours[:2]]
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    theirs = st.CrossEncoder(str(out)).rank(QUERY, DOCS, return_documents=True)
    assert [r["corpus_id"] for r in theirs] == [r["corpus_id"] for r in ours]
    assert [r["score"] for r in theirs] == pytest.approx([r["score"] for r in ours], abs=1e-5)


def test_export_cross_encoder_round_trip_and_model_card(bert_dir: str, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run, reranker = fake_run(tmp_path, bert_dir, "cross")
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    pairs = [(QUERY, d) for d in DOCS]
    ours = reranker.predict(pairs)
    assert st.CrossEncoder(str(out)).predict(pairs).tolist() == pytest.approx(ours, abs=1e-5)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    enc = AutoTokenizer.from_pretrained(out)([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**enc).logits[:, 0].tolist() == pytest.approx(ours, abs=1e-5)
    files = [p.name for p in out.rglob("*") if p.is_file()]
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pickle"))]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "text-ranking"
    # fake_run's base is a local folder and its data synthetic: neither is a Hub id, so neither is claimed
    assert "base_model" not in meta and "datasets" not in meta
    from huggingface_hub import ModelCard

    results = ModelCard(card).data.eval_results  # the Hub's own parser reads the model-index back
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in results} == {("r@2", 0.75, "held-out")}
    assert f"CrossEncoder({str(out)!r})" in card  # the usage snippet names the actual export
    needles = ("HuggingFaceTB/SmolLM2-135M-Instruct", "k=3", "tau=0.4", "kappa=1.0", "| R@2 | 0.500 | 0.750 |", "@inproceedings")
    for needle in needles:
        assert needle in card, needle


def test_export_bi_encoder_as_sentence_transformer(bert_dir: str, tmp_path: Path) -> None:
    run, reranker = fake_run(tmp_path, bert_dir, "bi")
    out = tmp_path / "exported-bi"
    assert main(["export", str(run), str(out)]) == 0
    model = st.SentenceTransformer(str(out))
    emb = model.encode([QUERY, *DOCS], convert_to_tensor=True)
    cos = model.similarity(emb[:1], emb[1:])[0]
    ours = torch.tensor(reranker.predict([(QUERY, d) for d in DOCS]))
    assert torch.allclose(cos / reranker.temperature, ours, atol=1e-4)
    assert yaml.safe_load((out / "README.md").read_text().split("---")[1])["pipeline_tag"] == "sentence-similarity"


def test_export_of_a_directory_without_reranker_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path), str(tmp_path / "out")]) == 2
    assert "no trained reranker" in capsys.readouterr().err


def test_rerank_cli_writes_trec_run_and_jsonl(bert_dir: str, tmp_path: Path) -> None:
    run, reranker = fake_run(tmp_path, bert_dir, "cross")
    questions = tmp_path / "questions.jsonl"
    examples = make_examples()
    write_jsonl(examples, questions)
    assert main(["rerank", str(run), "--input", str(questions), "--top-k", "2", "--output", str(tmp_path / "top"), "-q"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "top.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [ex.id for ex in examples] and all(len(r["results"]) == 2 for r in rows)
    lines = (tmp_path / "top.run").read_text().splitlines()
    assert len(lines) == 2 * len(examples)
    for ex, line in zip(examples, lines[::2], strict=True):
        scores = reranker.predict([(ex.question, f"{d.title}\n{d.text}") for d in ex.docs])
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        assert line.split()[:4] == [ex.id, "Q0", ex.docs[best].id, "1"]


@pytest.fixture
def server(bert_dir: str, tmp_path: Path) -> Iterator[tuple[str, Reranker, object]]:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    limits = Limits(max_body_bytes=20_000, max_documents=50, max_chars=500, max_wait_ms=50)
    srv, batcher = make_server(reranker, "127.0.0.1", 0, limits=limits, model_name="tiny")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", reranker, batcher
    srv.shutdown()
    srv.server_close()
    batcher.close()


def test_service_reranks_like_the_python_api(server) -> None:  # type: ignore[no-untyped-def]
    url, reranker, _ = server
    status, body = post_json(url + "/rerank", {"query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": True})
    assert status == 200
    expected = reranker.rank(QUERY, DOCS, top_k=3, return_documents=True)
    assert [r["index"] for r in body["results"]] == [r["corpus_id"] for r in expected]
    assert [r["score"] for r in body["results"]] == pytest.approx([r["score"] for r in expected], abs=1e-6)
    sigmoid = [1 / (1 + math.exp(-r["score"])) for r in expected]  # a cross-encoder's logit mapped to [0, 1]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(sigmoid, abs=1e-6)
    assert [r["document"]["text"] for r in body["results"]] == [r["text"] for r in expected]
    status, body = post_json(url + "/rerank", {"query": QUERY, "documents": [{"text": d} for d in DOCS]})
    assert status == 200 and len(body["results"]) == len(DOCS) and "document" not in body["results"][0]


BAD = [
    ({"query": QUERY}, 422, "documents"),
    ({"query": "", "documents": DOCS}, 422, "query"),
    ({"query": QUERY, "documents": [1, 2]}, 422, "documents[0]"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, 422, "top_n"),
    ({"query": QUERY, "documents": DOCS, "return_documents": "yes"}, 422, "return_documents"),
    ({"query": QUERY, "documents": DOCS, "extra": 1}, 422, "unknown field"),
    ({"query": QUERY, "documents": ["x"] * 51}, 413, "at most 50"),
    ({"query": QUERY, "documents": ["x" * 501]}, 413, "at most 500"),
    ([QUERY], 400, "JSON object"),
]


@pytest.mark.parametrize(("payload", "status", "message"), BAD)
def test_service_rejects_bad_requests_with_4xx(server, payload, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = server
    got, body = post_json(url + "/rerank", payload)
    assert got == status and message in body["error"]


def test_service_survives_malformed_and_oversized_bodies(server) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = server
    host, port = url.removeprefix("http://").split(":")
    for body, status in ((b"{not json", 400), (b"\xff\xfe", 400), (b"x" * 20_001, 413)):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/rerank", body=body, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == status
        conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/rerank")
    conn.endheaders()  # no Content-Length
    assert conn.getresponse().status == 411
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/nothing")
    assert conn.getresponse().status == 404
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"  # still alive


def test_bounded_load_test_micro_batches_concurrent_requests(server) -> None:  # type: ignore[no-untyped-def]
    url, _, batcher = server
    payloads = [{"query": f"{QUERY} {i}", "documents": DOCS * 3} for i in range(32)]
    result = load_test(url + "/rerank", payloads, concurrency=8)
    assert result.requests == 32 and result.errors == 0
    assert result.throughput > 0 and result.percentile(95) >= result.percentile(50) > 0
    assert batcher.requests == 32 and batcher.forward_batches < 32  # concurrent requests shared forward passes
    print(
        f"loopback load test: {result.throughput:.1f} req/s, p50 {result.percentile(50):.1f} ms, "
        f"p95 {result.percentile(95):.1f} ms, {batcher.forward_batches} forward batches for 32 requests"
    )


def test_predict_sorts_by_length_but_returns_input_order(bert_dir: str, tmp_path: Path) -> None:
    _, reranker = fake_run(tmp_path, bert_dir, "cross")
    pairs = [(QUERY, "short"), (QUERY, "a much longer document " * 5), (QUERY, "mid length doc"), (QUERY, "")]
    with torch.no_grad():
        expected = [reranker.score_pairs([q], [d]).item() for q, d in pairs]  # one pair at a time, no padding
    assert reranker.predict(pairs, batch_size=3) == pytest.approx(expected, abs=1e-5)
    assert reranker.predict(pairs, batch_size=3, precision="bf16") == pytest.approx(expected, abs=5e-2)
    with pytest.raises(ValueError, match="precision"):
        reranker.predict(pairs, precision="int4")


def test_export_never_deletes_a_users_files(bert_dir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `export RUN ~/mydocs` deleted mydocs, and `export RUN RUN` deleted the run itself."""
    run, _ = fake_run(tmp_path, bert_dir, "cross")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["export", str(run), str(run)]) == 2
    assert "holds the run" in capsys.readouterr().err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    mine = tmp_path / "mydocs"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", str(run), str(mine)]) == 2
    assert "not empty" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    assert main(["export", str(run), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run), str(out), "--overwrite"]) == 0 and (out / "model.safetensors").exists()
    assert main(["export", str(out), str(run / "reranker")]) == 2  # a saved reranker is never replaced either


def test_rank_rejects_a_non_positive_top_k_and_a_run_dir_loads(bert_dir: str, tmp_path: Path) -> None:
    """Before: rank(top_k=-1) silently dropped the last doc; from_pretrained(run_dir) failed."""
    run, reranker = fake_run(tmp_path, bert_dir, "cross")
    for bad in (-1, 0):
        with pytest.raises(ValueError, match="top_k must be a positive"):
            reranker.rank(QUERY, DOCS, top_k=bad)
    assert len(reranker.rank(QUERY, DOCS, top_k=None)) == len(DOCS)
    loaded = Reranker.from_pretrained(str(run))
    assert loaded.predict([(QUERY, d) for d in DOCS]) == pytest.approx(reranker.predict([(QUERY, d) for d in DOCS]))


def test_the_exported_cross_encoder_loads_in_the_rerankers_library(bert_dir: str, tmp_path: Path) -> None:
    rerankers = pytest.importorskip("rerankers")
    run, reranker = fake_run(tmp_path, bert_dir, "cross")
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    theirs = rerankers.Reranker(str(out), model_type="cross-encoder", device="cpu", verbose=0)
    ranked = theirs.rank(query=QUERY, docs=DOCS)
    ours = reranker.rank(QUERY, DOCS)
    assert [r.doc_id for r in ranked.results] == [r["corpus_id"] for r in ours]  # the same order as ours
