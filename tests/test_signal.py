"""The gradient-signal measure's premise: every objective's batch gradient is the mean of its questions'
gradients (with each question's own noise seed), so one pass of per-question gradients gives the
gradient of any batch."""

from __future__ import annotations

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama

from gumbel_rerank.config import ObjectiveConfig
from gumbel_rerank.evaluation.signal import _gradient, agreement, batch_cosines, interval, question_gradients
from gumbel_rerank.objectives import OBJECTIVES, TeacherCache
from gumbel_rerank.readers import make_reader
from gumbel_rerank.rerankers import Reranker


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_a_batch_gradient_is_the_mean_of_its_questions_gradients(name: str, bert_dir: str) -> None:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=64)
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    cfg = ObjectiveConfig(name=name, k=2, samples=2, temperature_score=0.5, temperature_gold=0.5, log_hard_loss=False)
    examples = make_examples()
    per_question, seconds = question_gradients(cfg, reranker, reader, examples, teachers=TeacherCache())
    objective = OBJECTIVES[name](cfg, TeacherCache())
    reranker.eval()
    # the batch's noise seeds are those question_gradients gave each question alone: seed * 1000 + 0
    batch = torch.stack([_gradient(reranker, objective, [ex], reader, seed=i + 1) for i, ex in enumerate(examples)]).mean(0)
    torch.testing.assert_close(per_question.mean(0), batch)
    assert seconds > 0 and per_question.abs().sum() > 0


def test_cosines_and_intervals_on_known_gradients() -> None:
    g = torch.tensor([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 8)
    same = batch_cosines(torch.tensor([[1.0, 2.0]] * 16), 4, 20)
    assert same == pytest.approx([1.0] * 20)
    mixed = batch_cosines(g, 4, 50)
    assert all(0.0 <= c <= 1.0 for c in mixed) and min(mixed) < 0.9
    mean, low, high = interval([0.1, 0.2, 0.3])
    assert low < mean < high and mean == pytest.approx(0.2)
    point, lo, hi = agreement(g, g)
    assert point == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    point, lo, hi = agreement(g, torch.tensor([[-1.0, -1.0]] * 16))
    assert point == pytest.approx(-1.0)
