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
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..rerankers import Reranker
from .batcher import BadInputError, BusyError, DeadlineError, MicroBatcher, ScoringError
from .protocol import Limits, RequestError, fail, parse_request, rerank_response

log = logging.getLogger(__name__)
ROUTES = ("/rerank", "/v1/rerank")
ALLOW = "GET, HEAD, POST, OPTIONS"


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
            if self.close_connection:  # after a framing error nothing more is read from this connection
                self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
            self._send(status, {"error": message, "status": int(status)}, headers)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals (a bad request line, 414, 431, 501, 505) as JSON, like every other
            reply; the connection is closed, since what follows on it cannot be trusted."""
            self.close_connection = True
            if getattr(self, "request_version", "") == "HTTP/0.9":  # a request line too broken to have a version
                self.request_version = "HTTP/1.1"
            try:
                status = HTTPStatus(code)
            except ValueError:
                status = HTTPStatus.BAD_REQUEST
            text = message or status.phrase
            if status == HTTPStatus.NOT_IMPLEMENTED:
                text += "; use POST /rerank or GET /health"
            self._error(status, text)

        def _framing(self) -> int | None:
            """The body's length from one Content-Length header (None: no body announced). Framing that two
            parties could read differently is refused and closes the connection: Transfer-Encoding (chunked
            bodies are not supported), with or without Content-Length, several Content-Length headers, or one
            that is not a plain number."""
            te = self.headers.get_all("Transfer-Encoding") or []
            cl = self.headers.get_all("Content-Length") or []
            if te or len(cl) > 1 or (cl and not (cl[0].isascii() and cl[0].isdigit() and len(cl[0]) <= 12)):
                self.close_connection = True
                if te and cl:
                    raise fail(HTTPStatus.BAD_REQUEST, "Content-Length together with Transfer-Encoding; send Content-Length only")
                if te:
                    raise fail(
                        HTTPStatus.LENGTH_REQUIRED, "chunked bodies (Transfer-Encoding) are not supported; send Content-Length"
                    )
                raise fail(HTTPStatus.BAD_REQUEST, "send one Content-Length header with the body's length in bytes")
            return int(cl[0]) if cl else None

        def _read_body(self, length: int) -> bytes:
            start, parts, got = time.monotonic(), [], 0
            while got < length:
                remaining = lim.read_deadline_s - (time.monotonic() - start)
                if remaining <= 0:
                    self.close_connection = True
                    raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {lim.read_deadline_s:g} s")
                self.connection.settimeout(remaining)
                try:
                    part = self.rfile.read1(min(length - got, 1 << 16))
                except TimeoutError:
                    self.close_connection = True
                    raise RequestError(
                        HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {lim.read_deadline_s:g} s"
                    ) from None
                finally:
                    self.connection.settimeout(lim.read_deadline_s)
                if not part:
                    self.close_connection = True
                    raise RequestError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length bytes")
                parts.append(part)
                got += len(part)
            return b"".join(parts)

        def _no_body(self) -> bool:
            """For a method that takes no body: False (and a 4xx sent) on bad framing; a body that is
            announced is not read, so the connection closes after the reply instead of parsing it."""
            try:
                length = self._framing()
            except RequestError as err:
                self._error(err.status, str(err), err.headers)
                return False
            if length:
                self.close_connection = True
            return True

        def do_GET(self) -> None:  # http.server's API names
            if not self._no_body():
                return
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
            try:
                length = self._framing()
            except RequestError as err:
                self._error(err.status, str(err), err.headers)
                return
            if length is None:
                self.close_connection = True  # a body may follow that we cannot delimit
                self._error(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header")
                return
            if length > lim.max_body_bytes:
                self.close_connection = True
                if length <= 16 * lim.max_body_bytes:  # read and drop it, so the client hears the reply
                    with contextlib.suppress(RequestError):
                        self._read_body(length)
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {lim.max_body_bytes}")
                return
            try:
                query, docs, top_n, ret = parse_request(self._read_body(length), lim)
                scores = batcher.score([(query, d) for d in docs])
                self._send(HTTPStatus.OK, rerank_response(reranker, scores, docs, top_n, ret))
            except RequestError as err:
                self._error(err.status, str(err), err.headers)
            except (BusyError, DeadlineError, BadInputError, ScoringError) as err:
                retry = {"Retry-After": str(getattr(err, "retry_after", 1))} if ERRORS[type(err)] == 503 else None
                self._error(ERRORS[type(err)], str(err), retry)

        def do_OPTIONS(self) -> None:
            if self._no_body():
                self._send(HTTPStatus.NO_CONTENT, None, {"Allow": ALLOW})

        def do_PUT(self) -> None:
            if self._no_body():
                self._error(
                    HTTPStatus.METHOD_NOT_ALLOWED, "use POST /rerank or GET /health", {"Allow": "GET, HEAD, POST, OPTIONS"}
                )

        do_DELETE = do_PATCH = do_PUT  # noqa: N815

    return _Server((host, port), Handler, lim.max_connections), batcher
