"""Evaluation scoring of a cross-encoder: whole questions per batch against pairs sorted by length.

    python bench/score_all.py             # about 4 minutes on 2 cores (--questions 40 --rounds 3)

The cross-encoder setting's reranker (MiniLM-L6 with a fresh 1-logit head, max_length 256) scores
HotpotQA questions x 10 paragraphs as every periodic evaluation and the final one do. Before: batches
of 8 whole questions (80 pairs), padded to their longest pair (``Reranker.score``). Now (``score_all``):
every pair of the questions longest first, 32 a batch (``Reranker.predict``). Both in float32, eval
mode. Each round runs both, alternating which goes first; reports the median times, their ratio, the
share of padded positions each way, the largest score difference and whether every question's
ranking is the same.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, hotpot_questions, median, timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "score_all.json"))
    args = p.parse_args()

    import torch

    from gumbel_rerank.data.schema import doc_text, rank
    from gumbel_rerank.evaluation.evaluate import score_all
    from gumbel_rerank.rerankers import Reranker

    torch.manual_seed(0)  # the fresh head
    reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind="cross", max_length=256)
    reranker.eval()
    questions = hotpot_questions(args.questions, 10)

    @torch.no_grad()
    def per_question_batches() -> list[list[float]]:  # score_all before: 8 whole questions a batch
        out: list[list[float]] = []
        for i in range(0, len(questions), 8):
            batch = questions[i : i + 8]
            s = reranker.score(batch)
            out += [s[b, : len(ex.docs)].tolist() for b, ex in enumerate(batch)]
        return out

    contenders: dict[str, Callable[[], object]] = {
        "8 questions a batch": per_question_batches,
        "sorted pairs (score_all)": functools.partial(score_all, reranker, questions),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name in contenders if r % 2 == 0 else reversed(list(contenders)):
            times[name] += timed(contenders[name], repeats=1, warmup=0 if r else 1)
    a, b = per_question_batches(), score_all(reranker, questions)
    diff = max(abs(x - y) for qa, qb in zip(a, b, strict=True) for x, y in zip(qa, qb, strict=True))
    same = sum(rank(qa) == rank(qb) for qa, qb in zip(a, b, strict=True)) / len(a)
    lengths = [
        len(ids)
        for ids in reranker.encode_pairs(
            [q.question for q in questions for _ in q.docs], [doc_text(d.title, d.text) for q in questions for d in q.docs]
        )["input_ids"]
    ]
    per8 = sum(len(b) * max(b) for b in (lengths[i * 10 : (i + 8) * 10] for i in range(0, len(questions), 8)))  # 10 docs each
    ordered = sorted(lengths, reverse=True)
    sorted32 = sum(len(ordered[i : i + 32]) * ordered[i] for i in range(0, len(ordered), 32))
    t_old, t_new = median(times["8 questions a batch"]), median(times["sorted pairs (score_all)"])
    result = {
        "questions": len(questions),
        "pairs": len(lengths),
        "rounds": args.rounds,
        "per_question_batches_s": t_old,
        "sorted_pairs_s": t_new,
        "speedup": t_old / t_new,
        "padding_share_per_question_batches": 1 - sum(lengths) / per8,
        "padding_share_sorted_pairs": 1 - sum(lengths) / sorted32,
        "max_abs_score_diff": diff,
        "same_ranking": same,
    }
    print(
        f"cross-encoder scoring of {len(lengths)} pairs ({len(questions)} HotpotQA questions), median of {args.rounds} rounds:\n"
        f"  8 questions a batch {t_old:.1f} s ({result['padding_share_per_question_batches']:.0%} padding), "
        f"sorted pairs {t_new:.1f} s ({result['padding_share_sorted_pairs']:.0%} padding): {t_old / t_new:.2f}x\n"
        f"  max |score diff| {diff:.1e}, same ranking for {same:.0%} of questions"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
