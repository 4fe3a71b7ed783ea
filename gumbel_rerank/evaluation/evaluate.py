"""Evaluation: rank every question's docs with the reranker, then score rankings and answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data.schema import Example, doc_text, doc_valid, has_bridge, rank
from ..readers.base import Reader
from ..rerankers import Reranker
from ..topk import hard_topk
from .metrics import exact_match, f1_score, full_support_at_k, mean, ndcg_at_k, recall_at_k, reciprocal_rank

PAIR_BLOCK = 8192  # pairs tokenised, sorted and scored per block of this many


@torch.no_grad()
def score_all(
    reranker: Reranker, examples: Sequence[Example], *, batch_size: int = 8, progress: bool = False
) -> list[list[float]]:
    """Deterministic float32 reranker scores, one list per question (its own number of docs).

    The (question, doc) pairs of many questions are scored together, longest first
    (:meth:`Reranker.predict`, ``batch_size`` x 4 pairs, or texts of a bi-encoder, a batch): batches of
    whole questions, padded to their longest pair, were 46% padding for a cross-encoder on HotpotQA
    (bench/score_all.py)."""
    pairs = [(ex.question, doc_text(d.title, d.text)) for ex in examples for d in ex.docs]
    flat: list[float] = []
    blocks = range(0, len(pairs), PAIR_BLOCK)
    for i in tqdm(blocks, desc="rerank", disable=not progress or len(blocks) < 2, leave=False):
        flat += reranker.predict(pairs[i : i + PAIR_BLOCK], batch_size=4 * batch_size, show_progress_bar=progress)
    out, start = [], 0
    for ex in examples:
        out.append(flat[start : start + len(ex.docs)])
        start += len(ex.docs)
    return out


def per_question(examples: Sequence[Example], scores: Sequence[Sequence[float]], ks: Sequence[int]) -> list[dict[str, float]]:
    """Gold, answer-doc and bridge-doc ranking metrics per question (ir_measures-style names; NaN if undefined).

    Bridge metrics count only questions with at least one answer-bearing gold doc (see
    :func:`gumbel_rerank.data.schema.has_bridge`).
    """
    rows = []
    for ex, s in zip(examples, scores, strict=True):
        ranking = rank(s)
        gold = {i for i, d in enumerate(ex.docs) if d.is_gold}
        direct = {i for i, d in enumerate(ex.docs) if d.is_gold and d.has_answer}
        # without an answer-bearing gold doc (yes/no comparisons) there is no bridge: NaN, skipped in means
        bridge = {i for i, d in enumerate(ex.docs) if d.is_bridge} if has_bridge(ex.docs) else set()
        row: dict[str, float] = {}
        for k in ks:
            row[f"R@{k}"] = recall_at_k(ranking, gold, k)
            row[f"FullSupport@{k}"] = full_support_at_k(ranking, gold, k)
            row[f"nDCG@{k}"] = ndcg_at_k(ranking, gold, k)
            row[f"answer_R@{k}"] = recall_at_k(ranking, direct, k)
            row[f"bridge_R@{k}"] = recall_at_k(ranking, bridge, k)
            row[f"bridge_nDCG@{k}"] = ndcg_at_k(ranking, bridge, k)
        row["RR"] = reciprocal_rank(ranking, gold)
        row["bridge_RR"] = reciprocal_rank(ranking, bridge)
        rows.append(row)
    return rows


def retrieval_metrics(examples: Sequence[Example], scores: Sequence[Sequence[float]], ks: Sequence[int]) -> dict[str, float]:
    """:func:`per_question` averaged over the questions where each metric is defined."""
    rows = per_question(examples, scores, ks)
    return {name: mean([r[name] for r in rows]) for name in (rows[0] if rows else {})}


def topk_keep(scores: Sequence[Sequence[float]], num_docs: int, *, k: int) -> torch.Tensor:
    """(B, num_docs) True at each question's hard top-k docs; empty slots are never kept."""
    padded = torch.full((len(scores), num_docs), -float("inf"))
    for b, s in enumerate(scores):
        padded[b, : len(s)] = torch.tensor(s)
    return hard_topk(padded, k=k).bool() & torch.isfinite(padded)


def kept_docs(examples: Sequence[Example], scores: Sequence[Sequence[float]], *, k: int) -> list[Example]:
    """Each question with only its hard top-k docs, in their original order: what a deployed reader
    reads. The reader then encodes k docs instead of all N, so evaluation pays only for the docs a view
    keeps. It equals the masked view over all N docs except where the question starts (after the
    longest kept doc rather than the longest of all, in the parallel layout): within 1e-3 nats per
    token on the tests (tests/test_selection.py), 0.05 on HotpotQA with SmolLM2 (bench/row_time.py)."""
    keep = topk_keep(scores, max((len(ex.docs) for ex in examples), default=0), k=k)
    return [replace(ex, docs=tuple(d for i, d in enumerate(ex.docs) if keep[b, i])) for b, ex in enumerate(examples)]


def topk_answer_nll(
    reader: Reader, examples: Sequence[Example], scores: Sequence[Sequence[float]], *, k: int, batch_size: int = 8
) -> list[float]:
    """Per question: the reader's answer NLL per token given only the ranking's hard top-k docs (Atlas's
    eval loss: what a RAG user gains from a better reranker, independent of greedy decoding)."""
    from ..objectives.base import Batch, answer_nll

    device = getattr(reader, "device", "cpu")
    kept = kept_docs(examples, scores, k=k)
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(kept), batch_size):
            batch = Batch(kept[i : i + batch_size], device=device)
            out += answer_nll(reader, batch, batch.valid.float().unsqueeze(1))[:, 0].tolist()
    return out


def reader_metrics(
    reader: Reader,
    examples: Sequence[Example],
    scores: Sequence[Sequence[float]],
    *,
    k: int,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> dict[str, Any]:
    """EM / F1 of the reader's greedy answers from the hard top-k docs of each question."""
    predictions: list[str] = []
    kept = kept_docs(examples, scores, k=k)
    for i in tqdm(range(0, len(kept), batch_size), desc="answer", disable=not progress, leave=False):
        batch = kept[i : i + batch_size]
        predictions += reader.generate(batch, doc_valid(batch), max_new_tokens=max_new_tokens)
    em = [exact_match(p, ex.answers) for p, ex in zip(predictions, examples, strict=True)]
    f1 = [f1_score(p, ex.answers) for p, ex in zip(predictions, examples, strict=True)]
    return {"EM": mean(em), "F1": mean(f1), "predictions": predictions, "per_question": {"EM": em, "F1": f1}}


def evaluate(
    cfg: Config,
    reranker: Reranker,
    reader: Reader | None,
    examples: list[Example],
    *,
    progress: bool = True,
    scores: list[list[float]] | None = None,
    detail: bool = False,
) -> dict[str, Any]:
    """Ranking metrics at every k in ``eval.ks``; with a reader, its answer NLL per token given the hard
    top-k (``answer_nll``, unless ``eval.answer_nll`` is off) and, with ``eval.generate``, EM/F1 from the top-k docs.

    ``scores`` are the reranker's scores of ``examples`` when the caller already has them. ``detail``
    adds ``per_question``: each metric's value per question (NaN where undefined), for paired tests.
    """
    if not examples:
        return {}
    if scores is None:
        scores = score_all(reranker, examples, batch_size=cfg.eval.batch_size, progress=progress)
    rows = per_question(examples, scores, cfg.eval.ks)
    values: dict[str, list[float]] = {name: [r[name] for r in rows] for name in rows[0]}
    if reader is not None and cfg.eval.answer_nll:
        values["answer_nll"] = topk_answer_nll(reader, examples, scores, k=cfg.objective.k, batch_size=cfg.eval.batch_size)
    if cfg.eval.generate and reader is not None:
        ev = cfg.eval
        qa = reader_metrics(
            reader,
            examples,
            scores,
            k=cfg.objective.k,
            batch_size=ev.batch_size,
            max_new_tokens=ev.max_new_tokens,
            progress=progress,
        )
        values.update(qa["per_question"])
    result: dict[str, Any] = {name: mean(v) for name, v in values.items()}  # NaN (undefined) left out, as ever
    if detail:
        result["per_question"] = values
    return result
