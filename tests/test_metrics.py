"""Metrics against an independent reference (ir_measures / trec_eval) and hand-checked QA cases."""

from __future__ import annotations

import math
import random
import re
import string

import ir_measures
import pytest
from ir_measures import RR, R, ScoredDoc, nDCG

from gumbel_rerank.data.schema import normalize_answer, rank
from gumbel_rerank.evaluation.metrics import (
    exact_match,
    f1_score,
    full_support_at_k,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
)


def random_case(rng: random.Random) -> tuple[list[float], set[int]]:
    n = rng.randint(2, 20)
    scores = [round(rng.uniform(-3, 3), 6) for _ in range(n)]  # distinct with probability ~1
    relevant = set(rng.sample(range(n), rng.randint(1, min(4, n))))
    return scores, relevant


@pytest.mark.parametrize("seed", range(5))
def test_ir_metrics_equal_trec_eval_on_random_rankings(seed: int) -> None:
    rng = random.Random(seed)
    cases = [random_case(rng) for _ in range(60)]
    qrels = [ir_measures.Qrel(f"q{i}", f"d{j}", 1) for i, (_, rel) in enumerate(cases) for j in rel]
    run = [ScoredDoc(f"q{i}", f"d{j}", s) for i, (scores, _) in enumerate(cases) for j, s in enumerate(scores)]
    measures = [R @ 2, R @ 5, nDCG @ 5, nDCG @ 10, RR]
    ref = {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc(measures, qrels, run)}
    for i, (scores, rel) in enumerate(cases):
        ranking = rank(scores)
        q = f"q{i}"
        assert recall_at_k(ranking, rel, 2) == pytest.approx(ref[(q, "R@2")], abs=1e-9)
        assert recall_at_k(ranking, rel, 5) == pytest.approx(ref[(q, "R@5")], abs=1e-9)
        assert ndcg_at_k(ranking, rel, 5) == pytest.approx(ref[(q, "nDCG@5")], abs=1e-6)
        assert ndcg_at_k(ranking, rel, 10) == pytest.approx(ref[(q, "nDCG@10")], abs=1e-6)
        assert reciprocal_rank(ranking, rel) == pytest.approx(ref[(q, "RR")], abs=1e-9)


def test_full_support_and_hand_values() -> None:
    ranking = [3, 0, 2, 1]
    assert full_support_at_k(ranking, {0, 3}, 2) == 1.0
    assert full_support_at_k(ranking, {0, 1}, 3) == 0.0
    assert recall_at_k(ranking, {0, 1}, 3) == 0.5
    assert reciprocal_rank(ranking, {2}) == pytest.approx(1 / 3)
    assert ndcg_at_k(ranking, {0}, 2) == pytest.approx(1 / math.log2(3))
    assert math.isnan(recall_at_k(ranking, set(), 2))


def test_rank_ties_go_to_lower_index() -> None:
    assert rank([1.0, 2.0, 1.0, 2.0]) == [1, 3, 0, 2]


@pytest.mark.parametrize(
    ("pred", "gold", "em", "f1"),
    [
        ("The Eiffel Tower!", ["eiffel tower"], 1.0, 1.0),  # articles, punctuation, case
        ("  a  Paris ", ["Paris"], 1.0, 1.0),
        ("in Paris France", ["Paris"], 0.0, 2 * (1 / 3) * 1 / (1 / 3 + 1)),
        ("yes", ["no"], 0.0, 0.0),  # HotpotQA yes/no rule
        ("yes it is", ["yes"], 0.0, 0.0),
        ("no", ["no"], 1.0, 1.0),
        ("Barack Obama", ["Obama", "Barack Obama"], 1.0, 1.0),  # best over golds
        ("1,000", ["1000"], 1.0, 1.0),
        ("cat dog", ["dog cat dog"], 0.0, 2 * 1.0 * (2 / 3) / (1.0 + 2 / 3)),
    ],
)
def test_em_f1_hand_checked_official_logic(pred: str, gold: list[str], em: float, f1: float) -> None:
    assert exact_match(pred, gold) == em
    assert f1_score(pred, gold) == pytest.approx(f1)


def official_normalize(s: str) -> str:
    """normalize_answer of the official SQuAD v1.1 / HotpotQA evaluation script, as published."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def test_answer_normalisation_equals_the_official_script() -> None:
    rng = random.Random(0)
    alphabet = string.printable + "éÉß—–“”‘’…ﬁ°½"
    cases = ["The  Eiffel-Tower!", "an apple a day", "A.B.C", "\u00a0the\tend\n"] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(2000)
    ]
    for text in cases:
        assert normalize_answer(text) == official_normalize(text), repr(text)
