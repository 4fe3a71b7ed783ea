"""Objectives: the right direction on hand-built cases, gradients through real readers, contracts."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama, tiny_t5

from gumbel_rerank.config import ObjectiveConfig
from gumbel_rerank.data.schema import Doc, Example
from gumbel_rerank.objectives import OBJECTIVES, Batch
from gumbel_rerank.objectives.gumbel import GumbelObjective
from gumbel_rerank.readers import DecoderReader, make_reader
from gumbel_rerank.readers.base import AnswerScores
from gumbel_rerank.readers.fid import FiDReader
from gumbel_rerank.rerankers import Reranker


class ClosedFormReader:
    """A reader with a known answer likelihood: p(answer) = (0.01 + sum_i w_i u_i) / (1 + sum_i w_i).

    ``u_i`` is how much doc i supports the answer. A real implementation of the Reader interface
    whose truth is known, so the direction of each objective's step can be checked exactly.
    """

    layout = "closed-form"
    model = torch.nn.Linear(1, 1)

    def __init__(self, usefulness: torch.Tensor) -> None:
        self.u = usefulness  # (B, N)

    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> None:
        return None

    def answer_logprob(self, context: None, doc_weights: torch.Tensor) -> AnswerScores:
        p = (0.01 + (doc_weights * self.u.unsqueeze(1)).sum(-1)) / (1 + doc_weights.sum(-1))  # (B, M)
        return AnswerScores(p.log().unsqueeze(-1), torch.ones(p.shape[0], 1, dtype=torch.bool))

    def doc_attention(self, context: None, aggregation: str) -> torch.Tensor:
        return self.u  # this reader looks at a doc as much as the doc supports the answer

    def generate(self, examples: list[Example], keep: torch.Tensor, *, max_new_tokens: int = 16) -> list[str]:
        return ["" for _ in examples]


def hand_built() -> tuple[list[Example], torch.Tensor]:
    docs = tuple(Doc(id=f"d{i}", title="", text=f"doc {i}", is_gold=i == 2, has_answer=i == 2) for i in range(5))
    examples = [Example("q", "question?", ("answer",), docs)]
    return examples, torch.tensor([[0.0, 0.05, 0.95, 0.0, 0.1]])


CONFIGS = {
    "gumbel": ObjectiveConfig(name="gumbel", k=2, tau=0.5, samples=64),
    "gumbel-straight-through": ObjectiveConfig(name="gumbel", k=2, tau=0.5, samples=64, straight_through=True),
    "gumbel-subset": ObjectiveConfig(name="gumbel", k=2, tau=0.5, samples=64, relaxation="subset"),
    "gumbel-no-noise": ObjectiveConfig(name="gumbel", k=2, tau=0.5, noise=False),
    "supervised": ObjectiveConfig(name="supervised"),
    "adist": ObjectiveConfig(name="adist"),
    "adist-value-norm": ObjectiveConfig(name="adist", adist_aggregation="value_norm"),
    "emdr": ObjectiveConfig(name="emdr"),
    "emdr-per-token": ObjectiveConfig(name="emdr", emdr_per_token=True),
    "pdist": ObjectiveConfig(name="pdist"),
    "loop": ObjectiveConfig(name="loop"),
    "lsr": ObjectiveConfig(name="lsr"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_one_step_raises_the_doc_that_lowers_the_answer_loss(name: str) -> None:
    cfg = CONFIGS[name]
    examples, usefulness = hand_built()
    scores = torch.zeros(1, 5, requires_grad=True)
    objective = OBJECTIVES[cfg.name](cfg)
    out = objective(Batch(examples), scores, ClosedFormReader(usefulness), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert scores.grad is not None
    stepped = scores.detach() - 0.1 * scores.grad
    assert int(stepped.argmax()) == 2, f"{name}: gradient {scores.grad}"
    assert stepped[0, 2] > scores[0, 2]


def test_tau_annealing_is_geometric() -> None:
    obj = GumbelObjective(ObjectiveConfig(tau=1.0, tau_final=0.01))
    assert obj.tau(0.0) == pytest.approx(1.0)
    assert obj.tau(0.5) == pytest.approx(0.1)
    assert obj.tau(1.0) == pytest.approx(0.01)
    assert GumbelObjective(ObjectiveConfig(tau=0.7)).tau(0.9) == 0.7


def test_k_larger_than_docs_is_a_clear_error() -> None:
    examples, usefulness = hand_built()
    obj = GumbelObjective(ObjectiveConfig(k=6))
    with pytest.raises(ValueError, match="lower objective.k"):
        obj(Batch(examples), torch.zeros(1, 5), ClosedFormReader(usefulness), torch.Generator())


def float64_readers() -> list[tuple[str, object]]:
    return [
        ("parallel", make_reader("parallel", tiny_llama().double(), byte_tokenizer("decoder"))),
        ("sequential", make_reader("sequential", tiny_llama().double(), byte_tokenizer("decoder"))),
        ("fid", FiDReader(tiny_t5().double(), byte_tokenizer("t5"))),
    ]


@pytest.mark.parametrize(("layout", "reader"), float64_readers(), ids=["parallel", "sequential", "fid"])
def test_gumbel_loss_gradcheck_through_the_reader_float64(layout: str, reader) -> None:  # type: ignore[no-untyped-def]
    """The whole G-Rerank loss, reader included, against finite differences (fixed noise).

    HF attention takes its softmax in float32 even in a float64 model, so the forward pass is only
    float32-smooth: central differences with eps=1e-3 (truncation error ~eps^2) are the finest
    that rise above that rounding, which still leaves about 1e-5 of absolute error in each entry
    (measured over seeds; the gradients themselves are 1e-4 to 5e-3). A wrong gradient (sign,
    missing factor, detached mask) is off by the gradient's own size.
    """
    examples = make_examples()
    batch = Batch(examples)
    obj = GumbelObjective(ObjectiveConfig(k=2, tau=0.7, kappa=1.3, samples=2, log_hard_loss=False))
    seed = 5

    def loss(scores: torch.Tensor) -> torch.Tensor:
        return obj(batch, scores, reader, torch.Generator().manual_seed(seed)).loss

    scores = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(loss, (scores,), eps=1e-3, atol=3e-5, rtol=2e-2)


# ---- contract tests over the registry ----------------------------------------------------------


def contract_setup(bert_dir: str) -> tuple[Reranker, DecoderReader]:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    return reranker, reader


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_contract_finite_loss_reader_untouched_reranker_changed_seeded(name: str, bert_dir: str) -> None:
    cfg = dataclasses.replace(ObjectiveConfig(name=name), k=2)
    reranker, reader = contract_setup(bert_dir)
    reader_before = {k: v.clone() for k, v in reader.model.state_dict().items()}
    ranker_before = {k: v.clone() for k, v in reranker.state_dict().items()}
    objective = OBJECTIVES[name](cfg)
    examples = make_examples()
    losses = []
    for _ in range(2):
        out = objective(Batch(examples), reranker.score(examples), reader, torch.Generator().manual_seed(3))
        losses.append(out.loss)
    assert losses[0].ndim == 0 and torch.isfinite(losses[0])
    assert torch.equal(losses[0].detach(), losses[1].detach())  # identical under the same seed
    optimizer = torch.optim.SGD(reranker.parameters(), lr=1.0)
    losses[0].backward()
    optimizer.step()
    assert all(p.grad is None for p in reader.model.parameters())
    assert all(torch.equal(v, reader_before[k]) for k, v in reader.model.state_dict().items())
    changed = [k for k, v in reranker.state_dict().items() if not torch.equal(v, ranker_before[k])]
    assert changed, "no reranker parameter changed"


def test_k_draw_gives_each_question_its_own_k_from_1_to_k_and_the_same_k_for_the_same_seed() -> None:
    """``objective.k_draw``: every row of the mask sums to its question's drawn k, every k in 1..K is
    drawn, a question's k depends only on its own generator, and the gradient still reaches every doc."""
    obj = GumbelObjective(ObjectiveConfig(k=4, k_draw=True, tau=0.5))
    B, N = 6, 8
    seen: set[int] = set()
    for seed in range(20):
        scores = torch.randn(B, N, requires_grad=True)
        valid = torch.ones(B, N, dtype=torch.bool)
        drawn = obj.draw(scores, valid, 0.5, [torch.Generator().manual_seed(seed * 100 + b) for b in range(B)])
        sums = drawn.masks.sum(-1)[:, 0]
        assert torch.allclose(sums, sums.round(), atol=1e-4) and ((sums.round() >= 1) & (sums.round() <= 4)).all()
        assert torch.equal(drawn.picks.sum(-1)[:, 0], sums.round().long())  # the hard picks hold the same k
        seen |= set(sums.round().long().tolist())
        again = obj.draw(scores, valid, 0.5, [torch.Generator().manual_seed(seed * 100 + b) for b in range(B)])
        assert torch.equal(again.masks, drawn.masks)
        alone = obj.draw(scores[2:3], valid[2:3], 0.5, [torch.Generator().manual_seed(seed * 100 + 2)])
        assert torch.allclose(alone.masks[0], drawn.masks[2])  # independent of the batch around it
    assert seen == {1, 2, 3, 4}
    (drawn.masks[:, 0] * torch.arange(N)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="k_draw"):
        GumbelObjective(ObjectiveConfig(k=4, k_draw=True, relaxation="l2x"))


def test_antithetic_samples_pair_each_noise_with_its_mirror_and_stay_gumbel() -> None:
    """``objective.antithetic``: sample s + S/2 is drawn from 1 - u of sample s, so on a question with
    equal scores the pair's noise sums to Gumbel(u) + Gumbel(1 - u) (negatively correlated, each one still
    standard Gumbel: mean 0.577, sd 1.28), and an odd sample count is refused."""
    from gumbel_rerank.topk import gumbel_noise

    g = gumbel_noise((2, 20000), generator=torch.Generator().manual_seed(0), dtype=torch.float64, antithetic=True)
    u = torch.exp(-torch.exp(-g))  # back to the uniforms
    assert torch.allclose(u[0] + u[1], torch.ones(20000, dtype=torch.float64), atol=1e-9)
    for row in g:
        assert abs(row.mean().item() - 0.5772) < 0.03 and abs(row.std().item() - 1.2825) < 0.03
    assert torch.corrcoef(g)[0, 1].item() < -0.5
    obj = GumbelObjective(ObjectiveConfig(k=2, samples=4, antithetic=True, tau=0.1))
    scores, valid = torch.zeros(3, 6), torch.ones(3, 6, dtype=torch.bool)
    drawn = obj.draw(scores, valid, 0.1, [torch.Generator().manual_seed(b) for b in range(3)])
    assert drawn.masks.shape == (3, 4, 6)
    # equal scores: the pair (s, s + 2) ranks the docs by mirrored noise, so their hard picks never
    # coincide with 6 docs and k = 2 (the top of u is the bottom of 1 - u)
    assert not (drawn.picks[:, 0] & drawn.picks[:, 2]).any() and not (drawn.picks[:, 1] & drawn.picks[:, 3]).any()
    with pytest.raises(ValueError, match="even"):
        GumbelObjective(ObjectiveConfig(k=2, samples=3, antithetic=True))
