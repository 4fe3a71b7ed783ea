"""Readers for dataset files: our JSONL schema, HotpotQA official records and the IRCoT format.

The format is detected per record from its keys, so JSON lists and JSON Lines both work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .schema import DataError, Doc, Example, contains_answer, example_from_json, validate


def _hotpot_official(r: dict[str, Any], where: str) -> Example:
    """Official HotpotQA: context [[title, [sentences]]], sentence-level supporting_facts -> doc-level gold."""
    gold_titles = {t for t, _ in r.get("supporting_facts", [])}
    answer = str(r["answer"])
    docs = tuple(
        Doc(id=f"{r['_id']}-{i}", title=str(title), text="".join(sents).strip(), is_gold=title in gold_titles,
            has_answer=contains_answer("".join(sents), [answer]))
        for i, (title, sents) in enumerate(r["context"])
    )
    return validate(Example(str(r["_id"]), str(r["question"]), (answer,), docs), where)


def _ircot(r: dict[str, Any], where: str) -> Example:
    """IRCoT processed format: contexts [{title, paragraph_text, is_supporting}], answers_objects[{spans}]."""
    answers = tuple(str(s) for obj in r["answers_objects"] for s in obj.get("spans", []))
    docs = tuple(
        Doc(id=f"{r['question_id']}-{i}", title=str(c.get("title", "")), text=str(c["paragraph_text"]),
            is_gold=bool(c.get("is_supporting", False)), has_answer=contains_answer(str(c["paragraph_text"]), answers))
        for i, c in enumerate(r["contexts"])
    )
    return validate(Example(str(r["question_id"]), str(r["question_text"]), answers, docs), where)


def parse_record(r: Any, where: str) -> Example:
    if not isinstance(r, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(r).__name__}")
    try:
        if "docs" in r or ("question" in r and "answers" in r):
            return example_from_json(r, where)
        if "context" in r and "supporting_facts" in r:
            return _hotpot_official(r, where)
        if "contexts" in r and "question_text" in r:
            return _ircot(r, where)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{where}: malformed record ({err!r}); check it against the format's fields") from None
    raise DataError(
        f"{where}: unknown record format (keys {sorted(r)[:8]}); expected our schema (id, question, answers, docs), "
        "official HotpotQA (context, supporting_facts) or IRCoT (question_text, contexts)"
    )


def read_examples(path: str | Path) -> Iterator[Example]:
    """Examples from a JSON list or a JSON Lines file, in file order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); convert the file to UTF-8") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        for i, r in enumerate(records):
            yield parse_record(r, f"{path}[{i}]")
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg}); each line must be one JSON object") from None
        yield parse_record(r, f"{path}:{lineno}")
