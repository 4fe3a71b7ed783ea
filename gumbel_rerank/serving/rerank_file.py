"""Rerank a file of questions with candidates: a TREC run and a JSONL of each question's top k."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from ..data.formats import read_examples
from ..data.schema import Example, doc_text, rank
from ..evaluation.runfiles import write_trec_run
from ..jsonsafe import write_text
from ..rerankers import Reranker


def read_candidates(input_path: str | Path) -> list[Example]:
    """Every question of ``input_path`` that has candidates; a bad record is a DataError naming its line."""
    examples = [ex for ex in read_examples(input_path, require_answers=False) if ex.docs]
    if not examples:
        raise ValueError(f"{input_path}: no question with candidate documents")
    return examples


def rerank_file(
    reranker: Reranker,
    source: str | Path | list[Example],
    out: str | Path,
    *,
    top_k: int = 10,
    batch_size: int = 32,
    progress: bool = False,
) -> int:
    """Write ``<out>.run`` (TREC, the top ``top_k`` per question) and ``<out>.jsonl``; return the number of
    questions reranked (those with at least one candidate). ``source`` is a data file or the questions
    :func:`read_candidates` read from one. Both outputs are written only once every question is scored."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    examples = source if isinstance(source, list) else read_candidates(source)
    out = Path(out)
    scores: list[list[float]] = []
    lines: list[str] = []
    for ex in tqdm(examples, desc="rerank", disable=not progress):
        s = reranker.predict([(ex.question, doc_text(d.title, d.text)) for d in ex.docs], batch_size=batch_size)
        if not all(math.isfinite(x) for x in s):
            raise ValueError(
                f"question {ex.id!r}: the reranker gave a non-finite score; check the model (e.g. a bi-encoder temperature of 0)"
            )
        scores.append(s)
        results = [
            {"rank": r + 1, "doc_id": ex.docs[i].id, "score": s[i], "title": ex.docs[i].title}
            for r, i in enumerate(rank(s)[:top_k])
        ]
        lines.append(json.dumps({"id": ex.id, "question": ex.question, "results": results}) + "\n")
    write_text(out.parent / f"{out.name}.jsonl", "".join(lines))  # both outputs only once every question is scored
    write_trec_run(examples, scores, out.parent / f"{out.name}.run", "gumbel-rerank", keep=top_k)
    return len(examples)
