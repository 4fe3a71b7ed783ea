"""The ``/rerank`` request and response: the service's limits, a body's validation (every field
type-checked, a 4xx that says what to change), and the response rows."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ..data.schema import doc_text, rank
from ..rerankers import Reranker


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


def fail(status: HTTPStatus, message: str) -> RequestError:
    return RequestError(status, message)


def parse_request(body: bytes, limits: Limits) -> tuple[str, list[str], int | None, bool]:
    """Validate a /rerank body: (query, documents as read, top_n, return_documents) or a RequestError."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, and ints past the digit limit
        raise fail(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise fail(HTTPStatus.BAD_REQUEST, "the body nests too deeply to be a rerank request") from None
    if not isinstance(data, dict):
        raise fail(HTTPStatus.BAD_REQUEST, "the body must be a JSON object with 'query' and 'documents'")
    unknown = set(data) - {"query", "documents", "top_n", "return_documents", "model"}
    if unknown:
        raise fail(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"unknown field(s) {sorted(unknown)}; expected query, documents, top_n, return_documents",
        )
    query = data.get("query")
    if not isinstance(query, str) or not query.strip():
        raise fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'query' must be a non-empty string")
    docs = data.get("documents")
    if not isinstance(docs, list) or not docs:
        raise fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'documents' must be a non-empty list of strings")
    if len(docs) > limits.max_documents:
        raise fail(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{len(docs)} documents; at most {limits.max_documents} per request, split the request",
        )
    texts = [_document(i, d) for i, d in enumerate(docs)]
    for name, text in [("query", query), *((f"documents[{i}]", t) for i, t in enumerate(texts))]:
        if len(text) > limits.max_chars:
            raise fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} has {len(text)} characters; at most {limits.max_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise fail(HTTPStatus.UNPROCESSABLE_ENTITY, f"{name} is not valid Unicode text (a lone surrogate escape)") from None
    top_n = data.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'top_n' must be a positive integer")
    ret = data.get("return_documents", False)
    if not isinstance(ret, bool):
        raise fail(HTTPStatus.UNPROCESSABLE_ENTITY, "'return_documents' must be true or false")
    return query, texts, top_n, ret


def _document(i: int, d: Any) -> str:
    """A document as the reranker reads it: a string, or {"text", "title"?} as "title\\ntext"."""
    if isinstance(d, str):
        return d
    if isinstance(d, dict) and isinstance(d.get("text"), str) and isinstance(d.get("title", ""), str):
        if set(d) - {"text", "title", "id"}:
            raise fail(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"documents[{i}] has unknown field(s) {sorted(set(d) - {'text', 'title', 'id'})}"
            )
        return doc_text(d.get("title", ""), d["text"])
    raise fail(HTTPStatus.UNPROCESSABLE_ENTITY, f'documents[{i}] must be a string or {{"text": str, "title"?: str}}')


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
