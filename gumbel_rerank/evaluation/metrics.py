"""IR and QA metrics as pure functions over one question; averaging is the caller's.

A ranking is a list of doc indices, best first (:func:`rank`: descending score, ties to the lower
index). ``relevant`` is the set of relevant doc indices (gold, or bridge-only).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence

from ..data.schema import normalize_answer

# Every table's metric columns, in this order ("{k}": once per eval.ks); ``mining_`` columns (the
# training questions themselves) follow the held-out ones.
COLUMNS = (
    "R@{k}",
    "FullSupport@{k}",
    "RR",
    "nDCG@{k}",
    "answer_R@{k}",
    "bridge_R@{k}",
    "bridge_RR",
    "bridge_nDCG@{k}",
    "answer_nll",
    "EM",
    "F1",
    "answer_nll_gold",
    "answer_nll_all",
    "EM_gold",
    "F1_gold",
)


def columns(available: Collection[str], ks: Sequence[int], *, prefixes: Sequence[str] = ("",)) -> list[str]:
    """The names of :data:`COLUMNS` expanded over ``ks`` and ``prefixes``, those in ``available``, in order."""
    out: list[str] = []
    for prefix in prefixes:
        for template in COLUMNS:
            for k in ks if "{k}" in template else [0]:
                name = prefix + template.format(k=k)
                if name in available and name not in out:
                    out.append(name)
    return out


def recall_at_k(ranking: Sequence[int], relevant: Collection[int], k: int) -> float:
    """Share of relevant docs in the top k (``R@k``); NaN when there is nothing relevant."""
    if not relevant:
        return math.nan
    return len(set(ranking[:k]) & set(relevant)) / len(relevant)


def full_support_at_k(ranking: Sequence[int], relevant: Collection[int], k: int) -> float:
    """1.0 when every relevant doc is in the top k."""
    if not relevant:
        return math.nan
    return float(set(relevant) <= set(ranking[:k]))


def reciprocal_rank(ranking: Sequence[int], relevant: Collection[int]) -> float:
    """1 / rank of the first relevant doc (``RR``; MRR is its mean), 0 if none is ranked."""
    if not relevant:
        return math.nan
    for pos, doc in enumerate(ranking, 1):
        if doc in relevant:
            return 1.0 / pos
    return 0.0


def ndcg_at_k(ranking: Sequence[int], relevant: Collection[int], k: int) -> float:
    """Binary-gain nDCG@k with log2 discounts (the trec_eval definition)."""
    if not relevant:
        return math.nan
    dcg = sum(1.0 / math.log2(pos + 1) for pos, doc in enumerate(ranking[:k], 1) if doc in relevant)
    ideal = sum(1.0 / math.log2(pos + 1) for pos in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD EM against the best of the gold answers."""
    return max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)


def _f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction), normalize_answer(truth)
    # HotpotQA rule: yes / no / noanswer only match exactly.
    if (pred in ("yes", "no", "noanswer") or gold in ("yes", "no", "noanswer")) and pred != gold:
        return 0.0
    p, g = pred.split(), gold.split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    """Token F1 (SQuAD / HotpotQA normalisation) against the best of the gold answers."""
    return max(_f1(prediction, a) for a in answers)


def mean(values: Sequence[float]) -> float:
    """Mean over the defined values (NaN for questions without relevant docs are skipped)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan
