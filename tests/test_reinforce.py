"""Subset REINFORCE is unbiased, and its leave-one-out baseline keeps the mean and lowers the variance.

A tiny case with a known answer: N = 5 docs, k = 2, a fake reader whose answer NLL is a fixed table of
the kept pair. The exact gradient of E[NLL] enumerates every ordered draw's Plackett-Luce probability
and differentiates with autograd; the estimator's Monte Carlo mean over many seeds must match it
within its standard error."""

from __future__ import annotations

import itertools

import pytest
import torch

from gumbel_rerank.config import ObjectiveConfig
from gumbel_rerank.data import Doc, Example
from gumbel_rerank.objectives import OBJECTIVES, Batch
from gumbel_rerank.objectives.reinforce import ReinforceObjective
from gumbel_rerank.readers.base import AnswerScores

N, K = 5, 2
PAIRS = list(itertools.combinations(range(N), K))
TABLE = {pair: 2.5 + 0.4 * ((3 * pair[0] + 5 * pair[1]) % 7) / 7 - (0.6 if pair == (1, 3) else 0.0) for pair in PAIRS}


class TableReader:
    """Answer NLL = TABLE[kept pair]; anything but a hard pair is an error (the estimator reads hard subsets)."""

    def __init__(self) -> None:
        self.calls = 0

    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> list[Example]:
        return examples

    def answer_logprob(self, context: list[Example], w: torch.Tensor) -> AnswerScores:
        assert not w.requires_grad  # the reader only scores
        self.calls += 1
        out = torch.zeros(w.shape[0], w.shape[1], 1, dtype=torch.float64)
        for b, m in itertools.product(range(w.shape[0]), range(w.shape[1])):
            kept = tuple(int(i) for i in w[b, m].nonzero().flatten())
            assert len(kept) == K and set(w[b, m].tolist()) <= {0.0, 1.0}
            out[b, m, 0] = -TABLE[kept]
        return AnswerScores(out, torch.ones(w.shape[0], 1, dtype=torch.bool))


EXAMPLE = Example("q", "Q?", ("A",), tuple(Doc(f"d{i}", "", f"doc {i}") for i in range(N)))
SCORES = [0.3, -0.2, 1.1, 0.4, -0.9]


def objective(samples: int, baseline: str = "loo") -> ReinforceObjective:
    cfg = ObjectiveConfig(name="reinforce", k=K, kappa=1.0, samples=samples, baseline=baseline, log_hard_loss=False)
    return ReinforceObjective(cfg)


def exact_gradient(obj: ReinforceObjective) -> torch.Tensor:
    """d E[NLL] / d scores, with E over every ordered draw of the Plackett-Luce distribution."""
    scores = torch.tensor([SCORES], dtype=torch.float64, requires_grad=True)
    theta = obj.logits(scores, torch.ones(1, N, dtype=torch.bool))[0]
    p = torch.softmax(theta, -1)
    expected = sum(p[i] * p[j] / (1 - p[i]) * TABLE[tuple(sorted((i, j)))] for i, j in itertools.permutations(range(N), 2))
    (grad,) = torch.autograd.grad(expected, scores)
    return grad[0]


def estimates(obj: ReinforceObjective, trials: int) -> torch.Tensor:
    """(trials, N) single-batch gradient estimates, one seed each."""
    reader = TableReader()
    out = torch.zeros(trials, N, dtype=torch.float64)
    for t in range(trials):
        scores = torch.tensor([SCORES], dtype=torch.float64, requires_grad=True)
        batch = Batch([EXAMPLE], noise_seeds=[t])
        (out[t],) = torch.autograd.grad(obj(batch, scores, reader, torch.Generator()).loss, scores)
    return out


def within_standard_error(est: torch.Tensor, exact: torch.Tensor, z: float = 4.5) -> bool:
    se = est.std(0) / est.shape[0] ** 0.5
    return bool(((est.mean(0) - exact).abs() <= z * se + 1e-9).all())


def test_the_plackett_luce_log_probability_sums_to_one_over_ordered_draws() -> None:
    obj = objective(1)
    theta = obj.logits(torch.tensor([SCORES]), torch.ones(1, N, dtype=torch.bool))
    orders = torch.tensor([list(itertools.permutations(range(N), K))])
    assert obj.log_prob(theta, orders).exp().sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("samples", "baseline"), [(4, "loo"), (1, "loo"), (4, "none")])
def test_the_estimator_is_unbiased(samples: int, baseline: str) -> None:
    obj = objective(samples, baseline)
    exact = exact_gradient(obj)
    assert exact.abs().max() > 0.05  # a gradient worth estimating
    est = estimates(obj, 3000)
    assert within_standard_error(est, exact), (est.mean(0), exact, est.std(0) / 3000**0.5)


def test_the_leave_one_out_baseline_keeps_the_mean_and_lowers_the_variance() -> None:
    loo, none = estimates(objective(4, "loo"), 3000), estimates(objective(4, "none"), 3000)
    exact = exact_gradient(objective(4))
    assert within_standard_error(loo, exact) and within_standard_error(none, exact)
    assert loo.var(0).sum() < 0.25 * none.var(0).sum()  # the common part of a 2.5-nat reward is gone


def test_it_is_one_file_and_one_registry_entry_and_reads_only_hard_subsets() -> None:
    assert OBJECTIVES["reinforce"] is ReinforceObjective and ReinforceObjective.title == "Subset REINFORCE"
    obj, reader = objective(3), TableReader()
    scores = torch.tensor([SCORES], requires_grad=True)
    out = obj(Batch([EXAMPLE], noise_seeds=[0]), scores, reader, torch.Generator())
    out.loss.backward()
    assert reader.calls == 1 and scores.grad is not None and scores.grad.abs().sum() > 0
    assert 2.0 < out.metrics["loss"] < 3.5  # the logged loss is the expected answer NLL, not the surrogate
