"""``gumbel-rerank data convert``: any supported file -> our JSONL schema, with a summary.

Bad records are never dropped silently: each is reported with file and line and counted by reason.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .formats import _literal, _records, detect, parse_record
from .schema import DataError, Example, has_bridge, ident, text


@dataclass
class Loaded:
    examples: list[Example] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    formats: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)  # kept, but worth knowing (e.g. gold docs missing)


def load(path: str | Path, *, allow_no_docs: bool = False) -> Loaded:
    """Every record of ``path``; question-only records become doc-less examples if ``allow_no_docs``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    out = Loaded()
    for record, where in _records(path):
        if isinstance(record, DataError):
            out.errors.append(record)
            continue
        fmt = detect(record)
        out.formats[fmt] += 1
        try:
            if fmt == "question-only" and allow_no_docs:
                out.examples.append(_question_only(record, where))
            else:
                out.examples.append(parse_record(record, where))
                _check_gold_present(record, fmt, where, out.warnings)
        except DataError as err:
            out.errors.append(err)
    return out


def _check_gold_present(r: dict[str, Any], fmt: str, where: str, warnings: list[str]) -> None:
    """HotpotQA/2Wiki name their gold docs by title: say when one is not among the candidates."""
    if fmt != "hotpotqa/2wiki":
        return
    titles = {str(t) for t, _ in _literal(r["context"])}
    missing = sorted({str(t) for t, _ in _literal(r.get("supporting_facts", []))} - titles)
    if missing:
        warnings.append(f"{where}: gold doc(s) {missing} missing from the candidates; question kept, counted")


def _question_only(r: dict[str, Any], where: str) -> Example:
    answers = r.get("answers", r.get("answer"))
    answers = [answers] if isinstance(answers, str) else answers
    question = text(r["question"], where, "question")
    if not isinstance(answers, list) or not answers or not question.strip():
        raise DataError(f"{where}: a question-only record needs a non-empty question and answer(s)")
    answers = [text(a, where, f"answers[{i}]") for i, a in enumerate(answers)]
    if not answers[0].strip():
        raise DataError(f"{where}: a question-only record needs a non-empty question and answer(s)")
    return Example(ident(r.get("id", question), where, "id"), question, tuple(answers), ())


def reason(err: DataError) -> str:
    """The reason part of an error message (after 'file:line: '), for counting."""
    text = str(err).split(": ", 1)[-1]
    return re.sub(r"'[^']*'", "'…'", text.split(";")[0].split(" (")[0])  # ids out, so reasons group


def summary(loaded: Loaded) -> dict[str, Any]:
    exs = loaded.examples
    docs = [len(ex.docs) for ex in exs]
    gold = [sum(d.is_gold for d in ex.docs) for ex in exs]
    bridge = [sum(d.is_bridge for d in ex.docs) if has_bridge(ex.docs) else 0 for ex in exs]
    # gold docs without the answer but no answer-bearing gold doc (yes/no comparisons): not bridge questions
    not_bridge = sum(any(d.is_bridge for d in ex.docs) and not has_bridge(ex.docs) for ex in exs)
    skipped = Counter(reason(e) for e in loaded.errors)
    return {
        "formats": dict(loaded.formats),
        "questions": len(exs),
        "docs_per_question": {
            "min": min(docs, default=0),
            "mean": statistics.fmean(docs) if docs else 0.0,
            "max": max(docs, default=0),
        },
        "gold_per_question": statistics.fmean(gold) if gold else 0.0,
        "bridge_per_question": statistics.fmean(bridge) if bridge else 0.0,
        "share_with_bridge": sum(b > 0 for b in bridge) / len(exs) if exs else 0.0,
        "excluded_from_bridge_metrics": not_bridge,
        "questions_without_gold": sum(g == 0 for g in gold),
        "questions_missing_a_gold_doc": len(loaded.warnings),
        "first_warnings": loaded.warnings[:2],
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "first_errors": [str(e) for e in loaded.errors[:3]],
    }
