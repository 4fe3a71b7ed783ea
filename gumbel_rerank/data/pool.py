"""Candidate pools for questions that come with one gold passage or none (NQ-open style).

Every question gets the ``n`` passages of a corpus closest to it under a bi-encoder (MiniLM by
default): the corpus is every passage of the input file plus an optional ``--corpus`` file. A
passage is gold when it is the question's own annotated passage; ``has_answer`` is a normalised
answer match. A question whose gold passage is not retrieved keeps its candidates and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .schema import Doc, Example, contains_answer, doc_text

if TYPE_CHECKING:
    from ..rerankers import Reranker


@dataclass(frozen=True)
class PoolStats:
    questions: int
    passages: int
    gold_not_retrieved: int


def _key(d: Doc) -> tuple[str, str]:
    return d.title, d.text


@torch.no_grad()
def build_pools(
    examples: list[Example], extra: list[Doc], *, n: int, encoder: Reranker, batch_size: int = 64, progress: bool = True
) -> tuple[list[Example], PoolStats]:
    """Replace each question's docs with its top-``n`` passages; ``encoder`` is a bi-encoder Reranker."""
    corpus: dict[tuple[str, str], Doc] = {}
    for d in [*(d for ex in examples for d in ex.docs), *extra]:
        corpus.setdefault(_key(d), d)
    passages = list(corpus.values())
    if not passages:
        raise ValueError("no passages to build candidate pools from; give --corpus with passages")
    embed = encoder.embed
    p_emb = torch.cat(
        [
            embed([doc_text(d.title, d.text) for d in passages[i : i + batch_size]])
            for i in tqdm(range(0, len(passages), batch_size), desc="embed passages", disable=not progress)
        ]
    )
    out, missed = [], 0
    for i in tqdm(range(0, len(examples), batch_size), desc="retrieve", disable=not progress):
        chunk = examples[i : i + batch_size]
        top = (embed([ex.question for ex in chunk]) @ p_emb.T).topk(min(n, len(passages)), dim=-1).indices
        for ex, idx in zip(chunk, top.tolist(), strict=True):
            gold = {_key(d) for d in ex.docs if d.is_gold}
            docs = tuple(
                replace(
                    passages[j],
                    id=f"{ex.id}-p{j}",
                    is_gold=_key(passages[j]) in gold,
                    has_answer=contains_answer(passages[j].text, ex.answers),
                )
                for j in idx
            )
            missed += bool(gold) and not any(d.is_gold for d in docs)
            out.append(replace(ex, docs=docs))
    return out, PoolStats(len(out), len(passages), missed)


def pool_from_corpus(
    examples: list[Example], corpus: list[Example], *, n: int, encoder: Reranker, progress: bool = True
) -> tuple[list[Example], PoolStats]:
    """:func:`build_pools` over the examples' passages and every passage of ``corpus``; a question-only
    example whose question is in ``corpus`` first takes that record's gold passages."""
    gold_by_question = {ex.question: tuple(d for d in ex.docs if d.is_gold) for ex in corpus}
    examples = [ex if ex.docs else replace(ex, docs=gold_by_question.get(ex.question, ())) for ex in examples]
    return build_pools(examples, [d for ex in corpus for d in ex.docs], n=n, encoder=encoder, progress=progress)
