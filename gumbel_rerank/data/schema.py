"""One example schema for every dataset: a question, its answers and its candidate docs."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the fix."""


def normalize_answer(text: str) -> str:
    """SQuAD / HotpotQA answer normalisation: lower case, no punctuation, articles or extra spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
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


def example_from_json(record: object, where: str, *, require_answers: bool = True) -> Example:
    """Build an :class:`Example` from one schema record (as written by :func:`write_jsonl`)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not require_answers:
        record = {"answers": [], **record}
    missing = [k for k in ("id", "question", "answers", "docs") if k not in record]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; a record needs id, question, answers, docs")
    if not isinstance(record["answers"], list) or not isinstance(record["docs"], list):
        raise DataError(f"{where}: 'answers' and 'docs' must be lists")
    try:
        docs = tuple(
            Doc(
                id=str(d["id"]),
                title=str(d.get("title", "")),
                text=str(d["text"]),
                is_gold=bool(d.get("is_gold", False)),
                has_answer=bool(d.get("has_answer", False)),
            )
            for d in record["docs"]
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{where}: every doc needs 'id' and 'text' ({err!r})") from None
    ex = Example(str(record["id"]), str(record["question"]), tuple(str(a) for a in record["answers"]), docs)
    return validate(ex, where, require_answers=require_answers)


def write_jsonl(examples: Iterable[Example], path: str | Path) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")


def doc_text(title: str, text: str) -> str:
    """What the reader and the reranker read of a doc: its title line, then its text."""
    return f"{title}\n{text}" if title else text


def num_docs(examples: list[Example]) -> int:
    return max(len(ex.docs) for ex in examples)


def doc_valid(examples: list[Example], device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, N) True where question b has a doc in slot n (questions may have fewer docs than N)."""
    n = num_docs(examples)
    valid = torch.zeros(len(examples), n, dtype=torch.bool, device=device)
    for b, ex in enumerate(examples):
        valid[b, : len(ex.docs)] = True
    return valid


def rank(scores: Sequence[float]) -> list[int]:
    """Doc indices by descending score; ties keep the lower index first (stable)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
