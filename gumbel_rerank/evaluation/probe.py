"""Does the reader need the gold docs? Answer NLL under views of the docs (the embedded data's check)."""

from __future__ import annotations

import torch

from ..data.schema import Example
from ..readers.base import Reader

VIEWS = ("all docs", "both gold docs", "answer doc only", "bridge doc only", "2 distractors", "answer doc + 2 distractors")


@torch.no_grad()
def reader_dependence(reader: Reader, examples: list[Example], batch_size: int = 4) -> dict[str, float]:
    """Mean answer NLL per token for each view in :data:`VIEWS`, plus how often gold beats the rest."""
    totals = torch.zeros(len(VIEWS))
    gold_wins = 0
    for i in range(0, len(examples), batch_size):
        batch = examples[i : i + batch_size]
        N = max(len(ex.docs) for ex in batch)
        w = torch.zeros(len(batch), len(VIEWS), N)
        for b, ex in enumerate(batch):
            w[b, 0, : len(ex.docs)] = 1
            for n, d in enumerate(ex.docs):
                w[b, 1, n], w[b, 2, n], w[b, 3, n] = float(d.is_gold), float(d.has_answer), float(d.is_bridge)
            distractors = [n for n, d in enumerate(ex.docs) if not d.is_gold][:2]
            w[b, 4, distractors] = 1
            w[b, 5] = w[b, 4] + w[b, 2]
        nll = -reader.answer_logprob(reader.prepare(batch), w).mean()  # (B, views)
        totals += nll.sum(0)
        gold_wins += int((nll[:, 1] < nll[:, 5]).sum())
    result = {view: float(t) / len(examples) for view, t in zip(VIEWS, totals, strict=True)}
    result["share: both gold < answer + 2 distr."] = gold_wins / len(examples)
    return result


def weight_gradients(reader: Reader, examples: list[Example], *, weight: float = 0.5, batch_size: int = 4) -> dict[str, float]:
    """Mean d(answer NLL)/d(w_i) by doc kind with every doc at ``weight``: the signal G-Rerank follows.

    Negative = the reader wants more of that kind of doc; positive = less.
    """
    sums: dict[str, list[float]] = {"answer doc (gold)": [], "bridge doc (gold)": [], "distractor": []}
    for i in range(0, len(examples), batch_size):
        batch = examples[i : i + batch_size]
        N = max(len(ex.docs) for ex in batch)
        w = torch.full((len(batch), 1, N), weight, requires_grad=True)
        (-reader.answer_logprob(reader.prepare(batch), w).mean()).sum().backward()
        assert w.grad is not None
        for b, ex in enumerate(batch):
            for n, d in enumerate(ex.docs):
                kind = "bridge doc (gold)" if d.is_bridge else "answer doc (gold)" if d.is_gold else "distractor"
                sums[kind].append(float(w.grad[b, 0, n]))
    return {f"dNLL/dw, {kind}": sum(v) / len(v) for kind, v in sums.items() if v}
