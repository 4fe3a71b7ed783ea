"""A ``/rerank`` HTTP service (also at ``/v1/rerank``) with micro-batching and bounded resources.

Request and response follow the shape common to hosted rerank APIs:
``POST /rerank {"query", "documents": [str | {"text", "title"?}], "top_n"?, "return_documents"?}`` ->
``{"results": [{"index", "relevance_score", "score", "document"?: {"text"}}]}``, best first, equal
scores in input order. ``score`` is the raw model score (a cross-encoder logit, or a bi-encoder's
cosine / temperature); ``relevance_score`` maps it to [0, 1]: the logit's sigmoid for a
cross-encoder, ``(cosine + 1) / 2`` for a bi-encoder. A doc's ``title`` is read as everywhere else
(``"title\\ntext"``). ``GET /health`` reports the model.

Bounded: a request body must arrive within ``read_deadline_s`` (slow-drip clients are cut off), at
most ``max_connections`` connections are served at once, at most ``max_queue`` requests wait for
scoring, and each has a deadline (:mod:`gumbel_rerank.serving.batcher`). Every limit answers with a 4xx or
503 JSON error that says what to change; nothing a client sends can crash the server or fail
another client's request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..data.schema import doc_text, rank
from ..rerankers import Reranker
from .batcher import BadInputError, BusyError, DeadlineError, MicroBatcher, ScoringError

log = logging.getLogger(__name__)
ROUTES = ("/rerank", "/v1/rerank")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_documents: int = 1000
    max_chars: int = 20_000  # per query or document
    max_batch_pairs: int = 64  # pairs per forward pass across requests: a short request waits one pass at most
    max_wait_ms: float = 5.0  # how long the batcher waits for more requests
    timeout_s: float = 60.0  # a request's scoring deadline
    max_queue: int = 64  # requests waiting for scoring; more get 503 + Retry-After
    max_connections: int = 64  # connections served at once; more get 503
    read_deadline_s: float = 30.0  # the whole request must arrive within this


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def _fail(status: HTTPStatus, message: str) -> RequestError:
    return RequestError(status, message)


def parse_request(body: bytes, limits: Limits) -> tuple[str, list[str], int | None, bool]:
    """Validate a /rerank body: (query, documents as read, top_n, return_documents) or a RequestError."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, and ints past the digit limit
        raise _fail(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise _fail(HTTPStatus.BAD_REQUEST, "the body nests too deeply to be a rerank request") from None
    if not isinstance(data, dict):
        raise _fail(HTTPStatus.BAD_REQUEST, "the body must be a JSON object with 'query' and 'documents'")
    unknown = set(data) - {"query", "documents", "top_n", "return_documents", "model"}
    if unknown:
        raise _fail(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"unknown field(s) {sorted(unknown)}; expected query, documents, top_n, return_documents",
        )
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'query' must be a non-empty string")
    docs = data.get("documents")
    if not isinstance(docs, list) or not docs:
        raise _fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'documents' must be a non-empty list of strings")
    if len(docs) > limits.max_documents:
        raise _fail(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{len(docs)} documents; at most {limits.max_documents} per request, split the request",
        )
    texts = [_document(i, d) for i, d in enumerate(docs)]
    for name, text in [("query", query), *((f"documents[{i}]", t) for i, t in enumerate(texts))]:
        if len(text) > limits.max_chars:
            raise _fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} has {len(text)} characters; at most {limits.max_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(HTTPStatus.UNPROCESSABLE_ENTITY, f"{name} is not valid Unicode text (a lone surrogate escape)") from None
    top_n = data.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise _fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'top_n' must be a positive integer")
    ret = data.get("return_documents", False)
    if not isinstance(ret, bool):
        raise _fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'return_documents' must be true or false")
    return query, texts, top_n, ret


def _document(i: int, d: Any) -> str:
    """A document as the reranker reads it: a string, or {"text", "title"?} as "title\\ntext"."""
    if isinstance(d, str):
        return d
    if isinstance(d, dict) and isinstance(d.get("text"), str) and isinstance(d.get("title", ""), str):
        if set(d) - {"text", "title", "id"}:
            raise _fail(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"documents[{i}] has unknown field(s) {sorted(set(d) - {'text', 'title', 'id'})}"
            )
        return doc_text(d.get("title", ""), d["text"])
    raise _fail(HTTPStatus.UNPROCESSABLE_ENTITY, f'documents[{i}] must be a string or {{"text": str, "title"?: str}}')


def relevance(reranker: Reranker, score: float) -> float:
    """A raw score mapped to [0, 1]: sigmoid of a cross-encoder logit; (cosine + 1) / 2 for a bi-encoder."""
    if reranker.kind == "bi":
        return min(max((score * reranker.temperature + 1) / 2, 0.0), 1.0)
    return 1 / (1 + math.exp(-score)) if score >= 0 else math.exp(score) / (1 + math.exp(score))


def rerank_response(
    reranker: Reranker, scores: Sequence[float], docs: Sequence[str], top_n: int | None, return_documents: bool
) -> dict[str, Any]:
    results = []
    for i in rank(scores)[:top_n]:
        row: dict[str, Any] = {"index": i, "relevance_score": relevance(reranker, scores[i]), "score": scores[i]}
        if return_documents:
            row["document"] = {"text": docs[i]}
        results.append(row)
    return {"results": results}


ERRORS = {
    BusyError: HTTPStatus.SERVICE_UNAVAILABLE,
    DeadlineError: HTTPStatus.SERVICE_UNAVAILABLE,
    BadInputError: HTTPStatus.UNPROCESSABLE_ENTITY,
    ScoringError: HTTPStatus.INTERNAL_SERVER_ERROR,
}


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once (the rest get 503 and are closed)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            body = b'{"error": "too many connections; retry shortly", "status": 503}'
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_server(
    reranker: Reranker,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    limits: Limits | None = None,
    model_name: str = "",
    precision: str = "fp32",
) -> tuple[ThreadingHTTPServer, MicroBatcher]:
    lim = limits or Limits()
    batcher = MicroBatcher(
        reranker,
        max_batch_pairs=lim.max_batch_pairs,
        max_wait_ms=lim.max_wait_ms,
        timeout_s=lim.timeout_s,
        max_queue=lim.max_queue,
        precision=precision,
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = lim.read_deadline_s  # per socket read; the whole body also has read_deadline_s

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

        def _send(self, status: HTTPStatus, payload: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
            body = b"" if payload is None else json.dumps(payload, allow_nan=False).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
            self._send(status, {"error": message, "status": int(status)}, headers)

        def _read_body(self, length: int) -> bytes:
            start, parts, got = time.monotonic(), [], 0
            while got < length:
                if time.monotonic() - start > lim.read_deadline_s:
                    self.close_connection = True
                    raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {lim.read_deadline_s:g} s")
                part = self.rfile.read1(min(length - got, 1 << 16))
                if not part:
                    self.close_connection = True
                    raise RequestError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length bytes")
                parts.append(part)
                got += len(part)
            return b"".join(parts)

        def do_GET(self) -> None:  # http.server's API names
            if self.path == "/health":
                self._send(
                    HTTPStatus.OK,
                    {"status": "ok", "model": model_name, "kind": reranker.kind, "max_documents": lim.max_documents},
                )
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}; try POST /rerank or GET /health")

        do_HEAD = do_GET  # noqa: N815  (headers only)

        def do_POST(self) -> None:
            if self.path not in ROUTES:
                self._error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}; try POST /rerank")
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit() or len(length) > 12:
                self._error(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
                return
            if int(length) > lim.max_body_bytes:
                self.close_connection = True
                if int(length) <= 16 * lim.max_body_bytes:  # read and drop it, so the client hears the reply
                    with contextlib.suppress(RequestError):
                        self._read_body(int(length))
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {lim.max_body_bytes}")
                return
            try:
                query, docs, top_n, ret = parse_request(self._read_body(int(length)), lim)
                scores = batcher.score([(query, d) for d in docs])
                self._send(HTTPStatus.OK, rerank_response(reranker, scores, docs, top_n, ret))
            except RequestError as err:
                self._error(err.status, str(err), err.headers)
            except (BusyError, DeadlineError, BadInputError, ScoringError) as err:
                retry = {"Retry-After": str(getattr(err, "retry_after", 1))} if ERRORS[type(err)] == 503 else None
                self._error(ERRORS[type(err)], str(err), retry)

        def do_OPTIONS(self) -> None:
            self._send(HTTPStatus.NO_CONTENT, None, {"Allow": "GET, HEAD, POST, OPTIONS"})

        def do_PUT(self) -> None:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /rerank or GET /health", {"Allow": "GET, HEAD, POST, OPTIONS"})

        do_DELETE = do_PATCH = do_PUT  # noqa: N815

    return _Server((host, port), Handler, lim.max_connections), batcher
