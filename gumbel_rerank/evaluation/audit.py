"""Can this reader teach this reranker? The frozen reader's answer NLL under views of each question's
docs, read before any training (``gumbel-rerank audit``).

Every label-free objective learns what the frozen reader prefers, so none can teach a reranker more
than the reader knows. Each question's docs are encoded once (:meth:`Reader.prepare`); every view is a
hard 0/1 doc mask over that one context, all views of a question in one reader call:

- **label-free**: the answer NLL per token with no doc, with the start's hard top-k, with all docs and
  with ``subsets`` random k-subsets; how much the NLL varies across k-subsets (a reader that does not
  care which k docs it reads can teach nothing); the share of questions whose best single doc (the
  lowest NLL with that doc alone) lies outside the start's top k;
- **with labels**: the start's R@k; the per-doc teacher (the answer log-prob with one doc alone, what
  PDist, EMDR2 and LSR distil), its R@k and gold-vs-distractor AUC beside the start's; the subset
  signal: for each gold doc the start's top k misses, swap it in for the lowest-ranked non-gold doc of
  the top k, and count how often that lowers the NLL (ties count half, so 0.5 means no signal); the
  NLL with the gold docs only.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import Config, ConfigError
from ..data.schema import Example, rank
from ..readers.base import Reader
from .metrics import mean, recall_at_k


@dataclass(frozen=True)
class Views:
    """One question's views as rows of a (M, N) hard mask, and where each kind of view starts."""

    masks: torch.Tensor
    topk: list[int]
    subsets: range
    singles: range
    swaps: list[tuple[int, int]]  # (gold doc swapped in, non-gold doc swapped out), one view each
    first_swap: int
    gold: int | None  # the gold-only view's row (None without gold docs)


def question_views(ex: Example, scores: Sequence[float], k: int, subsets: int, rng: random.Random) -> Views:
    """The views of one question: no doc, the start's top k, all docs, random k-subsets, each doc
    alone, then (with labels) each swap of a missed gold doc into the top k, and the gold docs only."""
    n = len(ex.docs)
    k = min(k, n)
    topk = rank(scores)[:k]
    rows: list[list[int]] = [[], topk, list(range(n))]
    rows += [rng.sample(range(n), k) for _ in range(subsets)]
    rows += [[i] for i in range(n)]
    gold = [i for i, d in enumerate(ex.docs) if d.is_gold]
    out = [i for i in reversed(topk) if not ex.docs[i].is_gold]  # the lowest-ranked non-gold doc first
    swaps = [(g, out[0]) for g in gold if g not in topk] if out else []
    first_swap = len(rows)
    rows += [[i for i in topk if i != o] + [g] for g, o in swaps]
    gold_row = len(rows) if gold else None
    if gold:
        rows.append(gold)
    masks = torch.zeros(len(rows), n)
    for r, keep in enumerate(rows):
        masks[r, keep] = 1.0
    return Views(masks, topk, range(3, 3 + subsets), range(3 + subsets, 3 + subsets + n), swaps, first_swap, gold_row)


def auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """P(a positive outscores a negative), ties half; NaN without both kinds."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return math.nan
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


@torch.no_grad()
def view_nlls(reader: Reader, ex: Example, masks: torch.Tensor) -> list[float]:
    """The answer NLL per token under each row of ``masks`` (M, N): the docs encoded once, one reader call."""
    return (-reader.answer_logprob(reader.prepare([ex]), masks.unsqueeze(0)).mean())[0].tolist()


def audit_question(
    reader: Reader, ex: Example, scores: Sequence[float], k: int, subsets: int, rng: random.Random
) -> dict[str, Any]:
    """One question's audit record (NLLs in nats per answer token)."""
    views = question_views(ex, scores, k, subsets, rng)
    nll = view_nlls(reader, ex, views.masks)
    singles = [nll[r] for r in views.singles]
    random_nll = [nll[r] for r in views.subsets]
    best = min(range(len(singles)), key=lambda i: (singles[i], i))
    rec: dict[str, Any] = {
        "id": ex.id,
        "none": nll[0],
        "topk": nll[1],
        "all": nll[2],
        "random": statistics.fmean(random_nll) if random_nll else math.nan,
        "random_sd": statistics.stdev(random_nll) if len(random_nll) > 1 else math.nan,
        "best_single_outside_topk": best not in views.topk,
        "swaps": [nll[views.first_swap + j] - nll[1] for j in range(len(views.swaps))],
    }
    gold = [d.is_gold for d in ex.docs]
    if any(gold):
        teacher = [-s for s in singles]  # the per-doc teacher: answer log-prob with one doc alone
        relevant = [i for i, g in enumerate(gold) if g]
        rec |= {
            "gold": nll[views.gold] if views.gold is not None else math.nan,
            "start_R@k": recall_at_k(rank(scores), relevant, k),
            "teacher_R@k": recall_at_k(rank(teacher), relevant, k),
            "start_auc": auc(scores, gold),
            "teacher_auc": auc(teacher, gold),
        }
    return rec


def summarise(records: list[dict[str, Any]], k: int, seconds: float) -> dict[str, Any]:
    """The audit's numbers over its questions, and the verdict."""
    swaps = [d for r in records for d in r["swaps"]]
    labelled = [r for r in records if "gold" in r]
    out: dict[str, Any] = {
        "questions": len(records),
        "k": k,
        "nll_no_doc": mean([r["none"] for r in records]),
        "nll_start_topk": mean([r["topk"] for r in records]),
        "nll_all_docs": mean([r["all"] for r in records]),
        "nll_random_k": mean([r["random"] for r in records]),
        "nll_sd_across_k_subsets": mean([r["random_sd"] for r in records]),
        "share_best_single_doc_outside_topk": mean([float(r["best_single_outside_topk"]) for r in records]),
        "seconds_per_question": seconds / max(len(records), 1),
    }
    if labelled:
        out |= {
            "labelled_questions": len(labelled),
            "start_R@k": mean([r["start_R@k"] for r in labelled]),
            "teacher_R@k": mean([r["teacher_R@k"] for r in labelled]),
            "start_auc": mean([r["start_auc"] for r in labelled]),
            "teacher_auc": mean([r["teacher_auc"] for r in labelled]),
            "nll_gold_only": mean([r["gold"] for r in labelled]),
            "questions_missing_gold_in_topk": sum(bool(r["swaps"]) for r in labelled),
            "swaps": len(swaps),
            "swap_share_lowering_nll": (sum((d < 0) + 0.5 * (d == 0) for d in swaps) / len(swaps)) if swaps else math.nan,
            "swap_mean_change": statistics.fmean(swaps) if swaps else math.nan,
        }
    out["verdict"] = verdict(out)
    return out


MIN_SWAPS = 10  # fewer swaps than this cannot tell a set-level signal from chance
FLAT = 0.05  # nats per token: below this spread across k-subsets the reader barely cares which docs it reads


def verdict(s: dict[str, Any]) -> str:
    """One line, in words: can training help, and which kind of objective the numbers favour."""
    parts = []
    spread = s["nll_sd_across_k_subsets"]
    if math.isnan(spread) or spread < FLAT:  # one subset only, or flat
        parts.append(
            f"the reader barely cares which {s['k']} docs it reads (NLL sd {spread:.3f} across k-subsets): "
            "no objective can learn from it"
        )
    else:
        gain = s["nll_random_k"] - s["nll_start_topk"]
        parts.append(
            f"the reader cares which docs it reads (NLL sd {spread:.3f} across k-subsets; the start's top {s['k']} "
            f"reads {abs(gain):.2f} nats {'better' if gain >= 0 else 'worse'} than random ones)"
        )
    if "teacher_auc" in s:
        t, a = s["teacher_auc"], s["start_auc"]
        if t < a:
            parts.append(
                f"the per-doc teacher ranks gold below the start (AUC {t:.2f} vs {a:.2f}): distillation will pull recall down"
            )
        else:
            parts.append(f"the per-doc teacher ranks gold above the start (AUC {t:.2f} vs {a:.2f}): distillation can help")
        share = s["swap_share_lowering_nll"]
        if not s["swaps"]:
            parts.append(f"the start's top {s['k']} already holds every gold doc: little room to learn")
        elif s["swaps"] < MIN_SWAPS:
            parts.append(
                f"only {s['swaps']} swaps (the reader prefers {share:.0%} of them): too few to judge the set-level signal; "
                "audit more questions"
            )
        elif share >= 0.65:
            parts.append(
                f"the reader prefers complete gold sets in {share:.0%} of {s['swaps']} swaps: "
                "a set-level objective (G-Rerank, reinforce) has a signal to use"
            )
        else:
            parts.append(f"the reader prefers the gold swap in only {share:.0%} of {s['swaps']} swaps: no set-level signal")
    else:
        parts.append(
            f"in {s['share_best_single_doc_outside_topk']:.0%} of questions the reader's best single doc is outside "
            f"the start's top {s['k']} (no labels: gold recall not measured)"
        )
    return "; ".join(parts) + "."


def audit_examples(
    reader: Reader,
    examples: list[Example],
    scores: list[list[float]],
    *,
    k: int,
    subsets: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The audit of ``examples`` under the start's ``scores``: {"summary": ..., "questions": [...]}."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    records = [
        audit_question(reader, ex, s, k, subsets, rng)
        for ex, s in tqdm(list(zip(examples, scores, strict=True)), desc="audit", disable=not progress)
    ]
    return {"summary": summarise(records, k, time.perf_counter() - t0), "questions": records}


ROWS = [
    ("nll_no_doc", "answer NLL, no doc"),
    ("nll_start_topk", "answer NLL, the start's top k"),
    ("nll_all_docs", "answer NLL, all docs"),
    ("nll_random_k", "answer NLL, random k-subsets"),
    ("nll_sd_across_k_subsets", "NLL sd across k-subsets"),
    ("share_best_single_doc_outside_topk", "best single doc outside the top k"),
    ("start_R@k", "start's gold R@k"),
    ("teacher_R@k", "per-doc teacher's gold R@k"),
    ("start_auc", "start's gold-vs-distractor AUC"),
    ("teacher_auc", "per-doc teacher's AUC"),
    ("nll_gold_only", "answer NLL, gold docs only"),
    ("swaps", "swaps (a missed gold doc into the top k)"),
    ("swap_share_lowering_nll", "share of swaps lowering the NLL"),
    ("swap_mean_change", "mean NLL change of a swap"),
    ("seconds_per_question", "reader seconds per question"),
]


def table(summary: dict[str, Any]) -> str:
    """The audit as a two-column text table (only the rows it has)."""
    lines = []
    for key, label in ROWS:
        if key in summary:
            v = summary[key]
            lines.append(f"  {label:<44} {v if isinstance(v, int) else format(v, '.3f')}")
    return "\n".join(lines)


def audit(
    cfg: Config,
    *,
    data: str | Path | None = None,
    questions: int | None = None,
    split: str = "validation",
    subsets: int = 4,
    reader: Reader | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit ``cfg``'s reader against its starting reranker on the config's ``split`` ("validation", the
    label-free split training selects on; "held-out"; "train") or on the first ``questions`` of the file
    ``data``. Returns {"summary", "questions", "setup"}; nothing is trained."""
    from ..data import load_splits, read_examples, split_validation
    from ..readers import build_reader
    from ..rerankers import Reranker
    from .evaluate import score_all

    if data is not None:
        examples = list(read_examples(data))
    else:
        train_set, held_out = load_splits(cfg.data)
        train_set, validation = split_validation(train_set, cfg.data.num_val)
        splits = {"validation": validation, "held-out": held_out, "train": train_set}
        if split not in splits:
            raise ConfigError(f"split must be one of {', '.join(splits)}, got {split!r}")
        examples = splits[split]
    examples = examples[:questions] if questions else examples
    if not examples:
        raise ConfigError(f"no questions to audit in the {split} split; set data.num_val, or pass --data FILE")
    reranker = Reranker.from_config(cfg.reranker)  # the start every objective trains from
    scores = score_all(reranker, examples, batch_size=cfg.eval.batch_size, progress=progress)
    reader = reader or build_reader(cfg.reader)
    result = audit_examples(reader, examples, scores, k=cfg.objective.k, subsets=subsets, seed=cfg.data.seed, progress=progress)
    source = str(data) if data is not None else f"{cfg.data.source} ({split})"
    result["setup"] = {
        "reader": cfg.reader.model,
        "adapter": cfg.reader.adapter,
        "layout": cfg.reader.layout,
        "reranker": cfg.reranker.model,
        "kind": cfg.reranker.kind,
        "data": source,
        "subsets": subsets,
    }
    return result
