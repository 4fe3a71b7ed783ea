"""The probe reports what the reader wants, by doc kind."""

from __future__ import annotations

import math

import torch
from test_objectives import ClosedFormReader

from gumbel_rerank.data import generate
from gumbel_rerank.evaluation.probe import VIEWS, reader_dependence, weight_gradients


def reader_that_needs_the_answer_doc(examples):  # type: ignore[no-untyped-def]
    usefulness = torch.tensor([[0.9 if d.has_answer else 0.3 if d.is_bridge else 0.0 for d in ex.docs] for ex in examples])
    return ClosedFormReader(usefulness)


def test_weight_gradients_sign_by_doc_kind() -> None:
    examples = generate(4)
    grads = weight_gradients(reader_that_needs_the_answer_doc(examples), examples, batch_size=4)
    assert grads["dNLL/dw, answer doc (gold)"] < 0 < grads["dNLL/dw, distractor"]


def test_reader_dependence_views() -> None:
    examples = generate(4)
    result = reader_dependence(reader_that_needs_the_answer_doc(examples), examples, batch_size=4)
    assert set(VIEWS) <= set(result) and all(math.isfinite(v) for v in result.values())
    assert result["both gold docs"] < result["2 distractors"]
    assert result["share: both gold < answer + 2 distr."] == 1.0
