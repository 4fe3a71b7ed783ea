"""A ``/rerank`` HTTP service with micro-batching, and a bounded load test.

Request and response follow the shape common to hosted rerank APIs:
``POST /rerank {"query", "documents": [str | {"text"}], "top_n"?, "return_documents"?}`` ->
``{"results": [{"index", "relevance_score", "document"?: {"text"}}]}``, best first, equal scores in
input order. ``GET /health`` reports the model. Concurrent requests are pooled by one scoring
thread (up to ``max_batch_pairs`` pairs or ``max_wait_ms``), so the model sees full batches.
Every limit answers with a 4xx JSON error that says what to change; nothing a client sends can
crash the server.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .metrics import rank
from .rerankers import Reranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_documents: int = 1000
    max_chars: int = 20_000  # per query or document
    max_batch_pairs: int = 256  # pairs scored together across concurrent requests
    max_wait_ms: float = 5.0  # how long the batcher waits for more requests
    timeout_s: float = 60.0


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    pairs: list[tuple[str, str]]
    done: threading.Event = field(default_factory=threading.Event)
    scores: list[float] | None = None
    error: BaseException | None = None


class MicroBatcher:
    """One thread owns the model; request threads hand it their pairs and wait."""

    def __init__(self, reranker: Reranker, limits: Limits, batch_size: int = 64) -> None:
        self.reranker, self.limits, self.batch_size = reranker, limits, batch_size
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.forward_batches = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._loop, name="rerank-batcher", daemon=True)
        self._thread.start()

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        job = _Job(pairs)
        self.jobs.put(job)
        if not job.done.wait(self.limits.timeout_s):
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "scoring timed out; retry with fewer documents")
        if job.error is not None:
            raise job.error
        assert job.scores is not None
        return job.scores

    def close(self) -> None:
        self.jobs.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            jobs, pairs = [first], len(first.pairs)
            deadline = time.monotonic() + self.limits.max_wait_ms / 1000
            while pairs < self.limits.max_batch_pairs:
                try:
                    nxt = self.jobs.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                jobs.append(nxt)
                pairs += len(nxt.pairs)
            try:
                flat = self.reranker.predict([p for j in jobs for p in j.pairs], batch_size=self.batch_size)
                self.forward_batches += 1
                self.requests += len(jobs)
                start = 0
                for j in jobs:
                    j.scores = flat[start : start + len(j.pairs)]
                    start += len(j.pairs)
            except Exception as err:  # a model failure fails these requests, not the server
                log.exception("scoring failed")
                for j in jobs:
                    j.error = RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"scoring failed: {type(err).__name__}")
            for j in jobs:
                j.done.set()


def parse_request(body: bytes, limits: Limits) -> tuple[str, list[str], int | None, bool]:
    """Validate a /rerank body: (query, documents, top_n, return_documents) or a RequestError."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object with 'query' and 'documents'")
    unknown = set(data) - {"query", "documents", "top_n", "return_documents", "model"}
    if unknown:
        raise RequestError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"unknown field(s) {sorted(unknown)}; expected query, documents, top_n, return_documents",
        )
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, "'query' must be a non-empty string")
    docs = data.get("documents")
    if not isinstance(docs, list) or not docs:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, "'documents' must be a non-empty list of strings")
    if len(docs) > limits.max_documents:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{len(docs)} documents; at most {limits.max_documents} per request, split the request",
        )
    texts = []
    for i, d in enumerate(docs):
        text = d.get("text") if isinstance(d, dict) else d
        if not isinstance(text, str):
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, f'documents[{i}] must be a string or {{"text": str}}')
        texts.append(text)
    for name, text in [("query", query), *((f"documents[{i}]", t) for i, t in enumerate(texts))]:
        if len(text) > limits.max_chars:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} has {len(text)} characters; at most {limits.max_chars}"
            )
    top_n = data.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, "'top_n' must be a positive integer")
    ret = data.get("return_documents", False)
    if not isinstance(ret, bool):
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, "'return_documents' must be true or false")
    return query, texts, top_n, ret


def rerank_response(scores: Sequence[float], docs: Sequence[str], top_n: int | None, return_documents: bool) -> dict[str, Any]:
    order = rank(scores)[:top_n]
    results = []
    for i in order:
        row: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            row["document"] = {"text": docs[i]}
        results.append(row)
    return {"results": results}


def make_server(
    reranker: Reranker, host: str = "127.0.0.1", port: int = 8000, *, limits: Limits | None = None, model_name: str = ""
) -> tuple[ThreadingHTTPServer, MicroBatcher]:
    lim = limits or Limits()
    batcher = MicroBatcher(reranker, lim)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds a client may take to send its request

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

        def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._send(status, {"error": message, "status": int(status)})

        def do_GET(self) -> None:  # http.server's API names
            if self.path == "/health":
                self._send(
                    HTTPStatus.OK,
                    {"status": "ok", "model": model_name, "kind": reranker.kind, "max_documents": lim.max_documents},
                )
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}; try POST /rerank or GET /health")

        def do_POST(self) -> None:
            if self.path != "/rerank":
                self._error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}; try POST /rerank")
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._error(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
                return
            if int(length) > lim.max_body_bytes:
                self.close_connection = True  # the body is not read
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {lim.max_body_bytes}")
                return
            try:
                query, docs, top_n, ret = parse_request(self.rfile.read(int(length)), lim)
                scores = batcher.score([(query, d) for d in docs])
                self._send(HTTPStatus.OK, rerank_response(scores, docs, top_n, ret))
            except RequestError as err:
                self._error(err.status, str(err))

        def do_PUT(self) -> None:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /rerank or GET /health")

        do_DELETE = do_PUT  # noqa: N815

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server, batcher


# ---- a bounded load test -------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]  # nearest-rank percentile


def post_json(url: str, payload: dict[str, Any], timeout: float = 60) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def load_test(url: str, payloads: Sequence[dict[str, Any]], *, concurrency: int = 8) -> LoadResult:
    """Send every payload once from ``concurrency`` client threads; latency per request."""

    def one(payload: dict[str, Any]) -> tuple[float, int]:
        t = time.perf_counter()
        status, _ = post_json(url, payload)
        return (time.perf_counter() - t) * 1000, status

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, payloads))
    seconds = time.perf_counter() - start
    return LoadResult(len(results), sum(s != 200 for _, s in results), seconds, [ms for ms, _ in results])
