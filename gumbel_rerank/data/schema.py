"""One example schema for every dataset: a question, its answers and its candidate docs."""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the fix."""


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD / HotpotQA answer normalisation: lower case, no punctuation, articles or extra spaces."""
    text = text.lower().translate(_NO_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """True when a normalised answer occurs in the normalised text as whole words."""
    norm = f" {normalize_answer(text)} "
    return any(a and f" {a} " in norm for a in (normalize_answer(x) for x in answers))


@dataclass(frozen=True)
class Doc:
    """A candidate doc. ``is_bridge``: gold but without the answer (docs/method.md, indirectly relevant)."""

    id: str
    title: str
    text: str
    is_gold: bool = False
    has_answer: bool = False

    @property
    def is_bridge(self) -> bool:
        return self.is_gold and not self.has_answer


def has_bridge(docs: Iterable[Doc]) -> bool:
    """True when a question has a bridge doc and an answer-bearing gold doc for it to lead to.

    Yes/no comparison questions have gold docs none of which contains the answer: they are not
    bridge questions, and bridge metrics skip them.
    """
    docs = list(docs)
    return any(d.is_bridge for d in docs) and any(d.is_gold and d.has_answer for d in docs)


@dataclass(frozen=True)
class Example:
    """A question with its gold answers (the first is the one the reader is scored on) and docs."""

    id: str
    question: str
    answers: tuple[str, ...]
    docs: tuple[Doc, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        record = asdict(self)
        record["answers"] = list(self.answers)
        record["docs"] = [asdict(d) for d in self.docs]
        return record


def validate(example: Example, where: str, *, require_answers: bool = True) -> Example:
    """Check one example; raise :class:`DataError` with ``where`` (file:line) and the fix. Without
    ``require_answers`` (reranking one's own candidates) a question may come without answers."""
    fields = [("question", example.question), *((f"answers[{i}]", a) for i, a in enumerate(example.answers))]
    fields += [(f"docs[{i}].{k}", getattr(d, k)) for i, d in enumerate(example.docs) for k in ("id", "title", "text")]
    for name, value in fields:
        text(value, where, name)
    if not example.question.strip():
        raise DataError(f"{where}: empty question; every record needs a non-empty 'question'")
    if require_answers and (not example.answers or not example.answers[0].strip()):
        raise DataError(f"{where}: question {example.id!r} has an empty answer; the reader is scored on answers[0]")
    if not example.docs:
        raise DataError(f"{where}: question {example.id!r} has no docs; give at least one candidate doc")
    ids = [d.id for d in example.docs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DataError(f"{where}: question {example.id!r} has duplicate doc ids {dup}; doc ids must be unique")
    return example


def _shown(value: object) -> str:
    return "null" if value is None else f"{json.dumps(value, allow_nan=True)[:40]} ({type(value).__name__})"


def text(value: object, where: str, name: str) -> str:
    """A text field as given: a string that UTF-8 can encode (no lone surrogate such as ``\\ud800``).
    Anything else is a :class:`DataError` naming the place and the field, never a silent ``str()``."""
    if not isinstance(value, str):
        raise DataError(f"{where}: {name} must be a string, got {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = value[err.start : err.end].encode("utf-8", "backslashreplace").decode()
        raise DataError(f"{where}: {name} holds {bad}, a lone surrogate that is not text; fix the file's encoding") from None
    return value


def ident(value: object, where: str, name: str) -> str:
    """An id: a string or an integer (written as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(value, where, name)


def flag(value: object, where: str, name: str) -> bool:
    """A yes/no label: true/false (or 0/1); NaN, strings and the rest are refused, not read as true."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise DataError(f"{where}: {name} must be true or false, got {_shown(value)}")


def example_from_json(record: object, where: str, *, require_answers: bool = True) -> Example:
    """Build an :class:`Example` from one schema record (as written by :func:`write_jsonl`); every field
    is type-checked (:func:`text`, :func:`ident`, :func:`flag`)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not require_answers:
        record = {"answers": [], **record}
    missing = [k for k in ("id", "question", "answers", "docs") if k not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; a record needs id, question, answers, docs")
    if not isinstance(record["answers"], list) or not isinstance(record["docs"], list):
        raise DataError(f"{where}: 'answers' and 'docs' must be lists")
    docs = []
    for i, d in enumerate(record["docs"]):
        if not isinstance(d, dict) or "id" not in d or "text" not in d:
            raise DataError(f"{where}: docs[{i}] must be an object with 'id' and 'text', got {_shown(d)}")
        title = d.get("title")
        docs.append(
            Doc(
                id=ident(d["id"], where, f"docs[{i}].id"),
                title="" if title is None else text(title, where, f"docs[{i}].title"),
                text=text(d["text"], where, f"docs[{i}].text"),
                is_gold=flag(d.get("is_gold", False), where, f"docs[{i}].is_gold"),
                has_answer=flag(d.get("has_answer", False), where, f"docs[{i}].has_answer"),
            )
        )
    answers = tuple(text(a, where, f"answers[{i}]") for i, a in enumerate(record["answers"]))
    ex = Example(ident(record["id"], where, "id"), text(record["question"], where, "question"), answers, tuple(docs))
    return validate(ex, where, require_answers=require_answers)


def write_jsonl(examples: Iterable[Example], path: str | Path) -> None:
    """Write atomically: a temporary file beside ``path``, renamed over it only when every record is
    written, so a failure leaves an existing file as it was."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file name for the output, e.g. {path / 'data.jsonl'}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except UnicodeEncodeError as err:
        raise DataError(f"{path}: a record holds text UTF-8 cannot encode ({err.reason}); nothing written") from None
    finally:
        tmp.unlink(missing_ok=True)


def doc_text(title: str, text: str) -> str:
    """What the reader and the reranker read of a doc: its title line, then its text."""
    return f"{title}\n{text}" if title else text


def num_docs(examples: list[Example]) -> int:
    return max(len(ex.docs) for ex in examples)


def doc_valid(examples: list[Example], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, N) True where question b has a doc in slot n (questions may have fewer docs than N)."""
    import torch  # here, so that reading data (and an ONNX reranker) needs no torch

    n = num_docs(examples)
    valid = torch.zeros(len(examples), n, dtype=torch.bool, device=device)
    for b, ex in enumerate(examples):
        valid[b, : len(ex.docs)] = True
    return valid


def rank(scores: Sequence[float]) -> list[int]:
    """Doc indices by descending score; ties keep the lower index first (stable)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def top_k_set(scores: Sequence[float], k: int) -> tuple[int, ...]:
    """The indices of the top-k docs of :func:`rank` (as hard_topk keeps them), in index order."""
    return tuple(sorted(rank(scores)[:k]))


def check_top_k(top_k: int | None) -> None:
    """Refuse a ``top_k`` below 1 (None keeps every document); ``rank`` calls it before any scoring."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive number of documents (or None for all), got {top_k}")


def ranked(
    scores: Sequence[float], documents: Sequence[str], *, top_k: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    """``[{corpus_id, score, text?}]`` best first (``CrossEncoder.rank``'s shape); equal scores keep input order."""
    check_top_k(top_k)
    results: list[dict[str, Any]] = []
    for i in rank(scores)[:top_k]:
        row: dict[str, Any] = {"corpus_id": i, "score": scores[i]}
        if return_documents:
            row["text"] = documents[i]
        results.append(row)
    return results


class _Scorer(Protocol):
    def predict(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = ...) -> list[float]: ...


class Ranks:
    """``rank`` for any scorer with ``predict`` (the torch :class:`~gumbel_rerank.rerankers.Reranker` and the
    torch-free ``OnnxReranker``): sentence-transformers' ``CrossEncoder.rank``."""

    def rank(
        self: _Scorer,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        return_documents: bool = False,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """``[{corpus_id, score, text?}]`` best first; equal scores keep input order. A bad ``top_k`` is
        refused before anything is scored."""
        check_top_k(top_k)
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size)
        return ranked(scores, documents, top_k=top_k, return_documents=return_documents)
