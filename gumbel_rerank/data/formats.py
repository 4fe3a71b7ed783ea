"""Readers for dataset files in their official formats, detected per record from its keys.

Supported: our JSONL schema; HotpotQA official records (distractor and fullwiki); the IRCoT
processed format; MuSiQue; 2WikiMultihopQA (official keys, also in the pandas column layout whose
list fields are stored as Python-literal strings); DPR/FiD-style records with ``ctxs`` (the
NQ-open oracle file). JSON lists, JSON Lines, gzip and pandas ``to_json()`` layouts all load.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .schema import DataError, Doc, Example, contains_answer, example_from_json, flag, ident, text, validate


def _literal(value: Any) -> Any:
    """2Wiki's pandas dump stores lists as Python-literal strings; parse them safely (no eval)."""
    if isinstance(value, str) and value[:1] in "[(":
        return ast.literal_eval(value)
    return value


def _docs(qid: str, items: list[tuple[str, str, bool]], answers: tuple[str, ...]) -> tuple[Doc, ...]:
    return tuple(
        Doc(id=f"{qid}-{i}", title=title, text=text, is_gold=gold, has_answer=contains_answer(text, answers))
        for i, (title, text, gold) in enumerate(items)
    )


def _item(d: dict[str, Any], text_key: str, gold_key: str, where: str, name: str) -> tuple[str, str, bool]:
    """(title, text, gold) of one candidate object, each field type-checked."""
    title = d.get("title")
    return (
        "" if title is None else text(title, where, f"{name}.title"),
        text(d[text_key], where, f"{name}.{text_key}"),
        flag(d.get(gold_key, False), where, f"{name}.{gold_key}") if d.get(gold_key) is not None else False,
    )


def _hotpot_official(r: dict[str, Any], where: str) -> Example:
    """HotpotQA / 2Wiki: context [[title, [sentences]]]; sentence-level supporting_facts -> doc-level gold."""
    qid = ident(r.get("_id", r.get("_1", r.get("id"))), where, "_id")
    gold_titles = {text(t, where, "supporting_facts title") for t, _ in _literal(r.get("supporting_facts", []))}
    answers = (text(r["answer"], where, "answer"),)
    items = [
        (text(t, where, "context title"), text("".join(sents), where, f"context {t!r}").strip(), t in gold_titles)
        for t, sents in _literal(r["context"])
    ]
    return validate(Example(qid, text(r["question"], where, "question"), answers, _docs(qid, items, answers)), where)


def _ircot(r: dict[str, Any], where: str) -> Example:
    """IRCoT processed format: contexts [{title, paragraph_text, is_supporting}], answers_objects[{spans}]."""
    answers = tuple(text(s, where, "answers_objects span") for obj in r["answers_objects"] for s in obj.get("spans", []))
    qid = ident(r["question_id"], where, "question_id")
    items = [_item(c, "paragraph_text", "is_supporting", where, f"contexts[{i}]") for i, c in enumerate(r["contexts"])]
    return validate(Example(qid, text(r["question_text"], where, "question_text"), answers, _docs(qid, items, answers)), where)


def _musique(r: dict[str, Any], where: str) -> Example:
    """MuSiQue: paragraphs [{idx, title, paragraph_text, is_supporting}], answer + answer_aliases."""
    answers = (text(r["answer"], where, "answer"), *(text(a, where, "answer_aliases") for a in r.get("answer_aliases", [])))
    qid = ident(r["id"], where, "id")
    items = [_item(p, "paragraph_text", "is_supporting", where, f"paragraphs[{i}]") for i, p in enumerate(r["paragraphs"])]
    return validate(Example(qid, text(r["question"], where, "question"), answers, _docs(qid, items, answers)), where)


def _dpr(r: dict[str, Any], where: str) -> Example:
    """DPR / FiD records: question, answers, ctxs [{title, text, isgold?, hasanswer?}]."""
    answers = tuple(text(a, where, f"answers[{i}]") for i, a in enumerate(r["answers"]))
    qid = ident(r.get("id", r.get("question_id", r["question"])), where, "id")
    items = [_item(c, "text", "isgold" if "isgold" in c else "is_gold", where, f"ctxs[{i}]") for i, c in enumerate(r["ctxs"])]
    return validate(Example(qid, text(r["question"], where, "question"), answers, _docs(qid, items, answers)), where)


def _no_docs(r: dict[str, Any], where: str) -> Example:
    raise DataError(
        f"{where}: a question with answers but no candidate docs (NQ-open style); "
        "build a candidate pool first: gumbel-rerank data convert FILE --corpus PASSAGES.jsonl.gz"
    )


FORMATS: list[tuple[str, Callable[[dict[str, Any]], bool], Callable[[dict[str, Any], str], Example]]] = [
    ("schema", lambda r: "docs" in r, example_from_json),
    ("musique", lambda r: "paragraphs" in r, _musique),
    ("hotpotqa/2wiki", lambda r: "context" in r and "supporting_facts" in r, _hotpot_official),
    ("ircot", lambda r: "contexts" in r and "question_text" in r, _ircot),
    ("dpr", lambda r: "ctxs" in r, _dpr),
    ("schema", lambda r: "question" in r and "answers" in r and "answer" not in r, example_from_json),
    ("question-only", lambda r: "question" in r and ("answer" in r or "answers" in r), _no_docs),
]


def detect(r: Any) -> str:
    """The name of the format a record is in ('unknown' if none)."""
    if isinstance(r, dict):
        for name, test, _ in FORMATS:
            if test(r):
                return name
    return "unknown"


def parse_record(r: Any, where: str, *, require_answers: bool = True) -> Example:
    """One record in any supported format -> :class:`Example`; :class:`DataError` says where and why.
    Without ``require_answers``, a record of our schema may come without answers (reranking only)."""
    if not isinstance(r, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(r).__name__}")
    if not require_answers and "docs" in r:
        return example_from_json(r, where, require_answers=False)
    for _, test, parse in FORMATS:
        if test(r):
            try:
                return parse(r, where)
            except DataError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError, IndexError, SyntaxError, MemoryError) as err:
                raise DataError(f"{where}: malformed record ({err!r}); check it against the format's fields") from None
    raise DataError(
        f"{where}: unknown record format (keys {sorted(map(str, r))[:8]}); expected our schema (id, question, answers, "
        "docs), HotpotQA/2Wiki (context, supporting_facts), IRCoT (question_text, contexts), MuSiQue (paragraphs) "
        "or DPR (ctxs)"
    )


def _records(path: Path) -> Iterator[tuple[Any, str]]:
    """(record, 'file:line') pairs from JSON (list or pandas column layout), JSON Lines, optionally gzip."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            text = f.read()
    except (UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read as UTF-8 text ({err}); give a JSON, JSON Lines or .gz file") from None
    head = text.lstrip()[:1]
    if head in "[{" and (head == "[" or "\n" not in text.strip()):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            # "Extra data" after a first value that fits on line 1: JSON Lines whose first line is an array
            if head == "[" and not (err.msg == "Extra data" and "\n" not in text[: err.pos].strip()):
                raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
            data = None  # refused below at its line
        except (ValueError, RecursionError) as err:  # an integer past the digit limit; nesting past the stack
            raise DataError(f"{path}: not a dataset file ({type(err).__name__}: {str(err)[:80]})") from None
        if isinstance(data, list):
            yield from ((r, f"{path}[{i}]") for i, r in enumerate(data))
            return
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            columns = list(data)  # pandas DataFrame.to_json(): {column: {row: value}}
            rows = list(data[columns[0]])
            yield from (({c: data[c].get(row) for c in columns}, f"{path}[row {row}]") for row in rows)
            return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), f"{path}:{lineno}"
        except json.JSONDecodeError as err:
            yield DataError(f"{path}:{lineno}: not valid JSON ({err.msg}); each line must be one JSON object"), ""
        except (ValueError, RecursionError) as err:
            yield DataError(f"{path}:{lineno}: not a record ({type(err).__name__}: {str(err)[:80]})"), ""


def read_examples(path: str | Path, *, require_answers: bool = True) -> Iterator[Example]:
    """Examples in file order; the first bad record raises :class:`DataError` (``data convert`` counts them
    instead). Without ``require_answers`` our schema's records may omit answers (reranking only)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    for record, where in _records(path):
        if isinstance(record, DataError):
            raise record
        yield parse_record(record, where, require_answers=require_answers)
