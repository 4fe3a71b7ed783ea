"""TREC outputs read back by ir_measures; the paired test against scipy's permutation test."""

from __future__ import annotations

import json
import random
from pathlib import Path

import ir_measures
import numpy as np
import pytest
from scipy import stats

from gumbel_rerank.data import generate
from gumbel_rerank.evaluation.evaluate import retrieval_metrics
from gumbel_rerank.evaluation.runfiles import holm, paired_permutation_test, write_comparison


def test_run_files_give_the_same_metrics_in_trec_eval(tmp_path: Path) -> None:
    examples = generate(30, seed=4)
    rng = random.Random(0)
    before = [[rng.random() for _ in ex.docs] for ex in examples]
    after = [[rng.random() + (2.0 if d.is_gold else 0.0) for d in ex.docs] for ex in examples]
    result = write_comparison(tmp_path, examples, before, after, ks=(2, 4))
    qrels = list(ir_measures.read_trec_qrels(str(tmp_path / "qrels.txt")))
    for name, scores in (("before", before), ("after", after)):
        run = list(ir_measures.read_trec_run(str(tmp_path / f"{name}.run")))
        ref = ir_measures.calc_aggregate(
            [ir_measures.parse_measure("R@2"), ir_measures.parse_measure("nDCG@4"), ir_measures.RR], qrels, run
        )
        ours = retrieval_metrics(examples, scores, (2, 4))
        assert ours["R@2"] == pytest.approx(ref[ir_measures.parse_measure("R@2")])
        assert ours["nDCG@4"] == pytest.approx(ref[ir_measures.parse_measure("nDCG@4")])
        assert result["RR"][name] == pytest.approx(ref[ir_measures.RR])
    assert result["R@2"]["p_value"] < 0.01  # a real, large improvement
    lines = (tmp_path / "per_question.jsonl").read_text().splitlines()
    assert len(lines) == 30 and json.loads(lines[0])["id"] == examples[0].id
    assert json.loads((tmp_path / "metrics.json").read_text())["R@2"]["after"] == pytest.approx(result["R@2"]["after"])


@pytest.mark.parametrize("n", [8, 40])
def test_paired_permutation_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.normal(size=n)
    b = a + rng.normal(0.3, 1.0, size=n)
    ours = paired_permutation_test(a.tolist(), b.tolist(), rounds=20_000)
    ref = stats.permutation_test(
        (a, b), lambda x, y: np.mean(y - x), permutation_type="samples", n_resamples=20_000 if n > 16 else np.inf, random_state=0
    ).pvalue
    assert ours == pytest.approx(ref, abs=0.02)


def test_paired_test_edge_cases() -> None:
    assert paired_permutation_test([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert paired_permutation_test([float("nan"), 1.0], [0.0, 1.0]) == 1.0


def test_holm_adjustment_by_hand() -> None:
    """Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> kept monotone: 0.06."""
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm({"x": 0.4, "y": 0.7}) == {"x": 0.8, "y": 0.8}  # capped at 1 only when above it
    assert holm({"x": 0.6, "y": 0.9}) == {"x": 1.0, "y": 1.0} and holm({}) == {}
