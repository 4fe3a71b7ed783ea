"""ONNX serving: an export's fp32 graph scores as the PyTorch reranker does (1e-4), for both kinds; its
int8 variant runs; rerank and the HTTP service take ``--backend onnx``; and the ONNX reranker needs
neither torch nor transformers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_serving import fake_run

from gumbel_rerank.cli import main
from gumbel_rerank.onnx_reranker import OnnxReranker
from gumbel_rerank.serving.export import export, load_reranker
from gumbel_rerank.serving.http import make_server
from gumbel_rerank.serving.loadtest import post_json

QUERY = "Who wrote the play Hamlet, and when was it first performed?"
DOCS = [
    "Hamlet is a tragedy written by William Shakespeare around 1600.",
    "Paris is the capital of France.",
    "The Globe Theatre staged many of Shakespeare's plays. " * 12,  # longer than max_length: truncated
    "",
]


@pytest.fixture(scope="module", params=["cross", "bi"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, bert_dir: str) -> tuple[Path, object]:
    tmp = tmp_path_factory.mktemp(f"onnx-{request.param}")
    run, reranker = fake_run(tmp, bert_dir, request.param)
    (tmp / "run").symlink_to(run)  # the run the export came from: torch reads its max_length from there
    return export(run, tmp / "export", onnx=True), reranker


def test_fp32_scores_equal_pytorch_and_int8_runs(exported: tuple[Path, object]) -> None:
    out, reranker = exported
    pairs = [(QUERY, d) for d in DOCS] + [("why " * 80, "a query longer than max_length")]
    torch_scores = np.array(reranker.predict(pairs))  # type: ignore[attr-defined]
    fp32 = OnnxReranker.from_pretrained(out)
    assert fp32.kind == reranker.kind and fp32.max_length == reranker.max_length  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.array(fp32.predict(pairs, batch_size=2)), torch_scores, atol=1e-4, rtol=0)
    int8 = OnnxReranker.from_pretrained(out, variant="int8")
    assert (
        np.isfinite(int8.predict(pairs)).all()
        and (out / "onnx" / "model_qint8.onnx").stat().st_size < (out / "onnx" / "model.onnx").stat().st_size
    )
    assert [r["corpus_id"] for r in fp32.rank(QUERY, DOCS)] == [r["corpus_id"] for r in reranker.rank(QUERY, DOCS)]  # type: ignore[attr-defined]
    scored = []
    fp32.predict = lambda pairs, batch_size=32: scored.append(pairs) or [0.0] * len(pairs)  # type: ignore[method-assign]
    for bad in (-1, 0):  # refused as the torch reranker refuses it, before any scoring
        with pytest.raises(ValueError, match="top_k must be a positive"):
            fp32.rank(QUERY, DOCS, top_k=bad)
    assert scored == []


def test_rerank_and_serve_take_the_onnx_backend(exported: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = exported
    data = tmp_path / "q.jsonl"
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(DOCS)]
    data.write_text(json.dumps({"id": "q", "question": QUERY, "docs": docs}) + "\n")
    for backend, model in (("torch", out.parent / "run"), ("onnx", out)):
        argv = ["rerank", str(model), "--input", str(data), "--output", str(tmp_path / backend), "--backend", backend, "-q"]
        assert main(argv) == 0
    ranked = [json.loads((tmp_path / f"{b}.jsonl").read_text())["results"] for b in ("torch", "onnx")]
    assert [r["doc_id"] for r in ranked[0]] == [r["doc_id"] for r in ranked[1]]
    onnx = load_reranker(out, backend="onnx-int8")
    srv, batcher = make_server(onnx, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        status, body = post_json(f"http://127.0.0.1:{srv.server_address[1]}/rerank", {"query": QUERY, "documents": DOCS})
        assert status == 200 and len(body["results"]) == len(DOCS)
        assert all(0.0 <= r["relevance_score"] <= 1.0 for r in body["results"])
    finally:
        srv.shutdown()
        srv.server_close()
        batcher.close()
    with pytest.raises(FileNotFoundError, match="export RUN OUT --onnx"):
        OnnxReranker.from_pretrained(tmp_path)


def test_the_onnx_reranker_needs_no_torch(exported: tuple[Path, object]) -> None:
    out, _ = exported
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from gumbel_rerank.onnx_reranker import OnnxReranker\n"
        f"r = OnnxReranker.from_pretrained({str(out)!r})\n"
        "print(len(r.predict([('q', 'a doc'), ('q', 'another')])))\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "2", done.stderr[-2000:]
