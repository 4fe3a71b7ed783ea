"""Check a real reader: masked equals removed on generated questions, plus the probe numbers.

Usage: python scripts/check_reader.py MODEL LAYOUT [LAYOUT ...]
e.g.   python scripts/check_reader.py gemma-3-270m parallel sequential

In the parallel layout dropping the shortest doc keeps the question's position, so the masked and
the removed runs must agree to float precision; in the sequential layout removal shifts the later
tokens' positions, so a small difference is expected there (the tests check it at equal positions).
"""

from __future__ import annotations

import sys
import time

import torch

from gumbel_rerank.data.schema import Example
from gumbel_rerank.data.synthetic import generate
from gumbel_rerank.evaluation.probe import reader_dependence, weight_gradients
from gumbel_rerank.models import load_causal_lm
from gumbel_rerank.readers import DecoderReader, make_reader


@torch.no_grad()
def masked_vs_removed(reader: DecoderReader, examples: list[Example]) -> float:
    worst = 0.0
    for ex in examples:
        j = min(range(len(ex.docs)), key=lambda i: len(ex.docs[i].text))
        w = torch.ones(1, 1, len(ex.docs))
        w[0, 0, j] = 0
        masked = reader.answer_logprob(reader.prepare([ex]), w).mean()
        kept = Example(ex.id, ex.question, ex.answers, tuple(d for i, d in enumerate(ex.docs) if i != j))
        removed = reader.answer_logprob(reader.prepare([kept]), torch.ones(1, 1, len(kept.docs))).mean()
        worst = max(worst, float((masked - removed).abs().max()))
    return worst


def main(model_name: str, layouts: list[str]) -> None:
    start = time.perf_counter()
    model, tokenizer = load_causal_lm(model_name)
    print(f"loaded {type(model).__name__} in {time.perf_counter() - start:.1f} s")
    examples = generate(8, seed=2)
    for layout in layouts:
        reader = make_reader(layout, model, tokenizer)
        print(f"{layout}: masked vs removed, max |diff| = {masked_vs_removed(reader, examples[:4]):.2e}")
        for name, value in {**reader_dependence(reader, examples), **weight_gradients(reader, examples)}.items():
            print(f"  {name:<38} {value:+.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or ["parallel"])
