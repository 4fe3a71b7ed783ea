"""Evaluation scoring: whole questions per batch against pairs (texts) sorted by length.

    python bench/score_all.py             # about 5 minutes on 2 cores (--questions 40 --rounds 3)

MiniLM-L6 as the cross-encoder setting's reranker (a fresh 1-logit head, max_length 256) and as the
bi-encoder of the other groups scores HotpotQA questions x 10 paragraphs, as every periodic evaluation
and the final one do. Before: batches of 8 whole questions (80 pairs), padded to their longest pair or
text (``Reranker.score``). Now (``score_all``): the pairs of all questions longest first, 32 a batch
(``Reranker.predict``; a bi-encoder embeds each distinct text once). Both in float32, eval mode, the
whole encoder (no frozen-bottom cache). Each round runs both, alternating which goes first; reports
the median times, their ratio, the share of padded positions each way, the largest score difference
and whether every question's ranking is the same.
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


def padding(lengths: list[int], batches: list[list[int]]) -> float:
    """The share of padded positions when each batch (indices into ``lengths``) pads to its longest."""
    return 1 - sum(lengths) / sum(len(b) * max(lengths[i] for i in b) for b in batches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kinds", default="cross,bi")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "score_all.json"))
    args = p.parse_args()

    import torch

    from gumbel_rerank.data.schema import doc_text, rank
    from gumbel_rerank.evaluation.evaluate import score_all
    from gumbel_rerank.rerankers import Reranker

    questions = hotpot_questions(args.questions, 10)
    results = []
    for kind in args.kinds.split(","):
        torch.manual_seed(0)  # the cross-encoder's fresh head
        reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind=kind, max_length=256)
        reranker.eval()

        @torch.no_grad()
        def per_question_batches(reranker: Reranker = reranker) -> list[list[float]]:  # before: 8 questions a batch
            out: list[list[float]] = []
            for i in range(0, len(questions), 8):
                batch = questions[i : i + 8]
                s = reranker.score(batch)
                out += [s[b, : len(ex.docs)].tolist() for b, ex in enumerate(batch)]
            return out

        contenders: dict[str, Callable[[], object]] = {
            "8 questions a batch": per_question_batches,
            "sorted (score_all)": functools.partial(score_all, reranker, questions),
        }
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(args.rounds):
            for name in contenders if r % 2 == 0 else reversed(list(contenders)):
                times[name] += timed(contenders[name], repeats=1, warmup=0 if r else 1)
        a, b = per_question_batches(), score_all(reranker, questions)
        diff = max(abs(x - y) for qa, qb in zip(a, b, strict=True) for x, y in zip(qa, qb, strict=True))
        same = sum(rank(qa) == rank(qb) for qa, qb in zip(a, b, strict=True)) / len(a)
        queries = [q.question for q in questions for _ in q.docs]
        docs = [doc_text(d.title, d.text) for q in questions for d in q.docs]
        if kind == "cross":
            lengths = [len(ids) for ids in reranker.encode_pairs(queries, docs)["input_ids"]]
            whole = [list(range(i * 10, min(i + 8, len(questions)) * 10)) for i in range(0, len(questions), 8)]
        else:  # each batch embeds its questions and its docs, padded to their longest
            texts = list(dict.fromkeys(queries + docs))
            lengths = [len(ids) for ids in reranker.tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
            at = {t: i for i, t in enumerate(texts)}
            whole = [
                sorted({at[t] for t in docs[i * 10 : (i + 8) * 10]}) for i in range(0, len(questions), 8)
            ]  # the docs' batches (the questions' are small)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        t_old, t_new = median(times["8 questions a batch"]), median(times["sorted (score_all)"])
        row = {
            "kind": kind,
            "questions": len(questions),
            "pairs": len(queries),
            "per_question_batches_s": t_old,
            "sorted_s": t_new,
            "speedup": t_old / t_new,
            "padding_share_per_question_batches": padding(lengths, whole),
            "padding_share_sorted": padding(lengths, [order[i : i + 32] for i in range(0, len(order), 32)]),
            "max_abs_score_diff": diff,
            "same_ranking": same,
        }
        results.append(row)
        print(
            f"{kind}-encoder, {len(queries)} pairs ({len(questions)} HotpotQA questions), median of {args.rounds} rounds: "
            f"8 questions a batch {t_old:.1f} s ({row['padding_share_per_question_batches']:.0%} padding), "
            f"sorted {t_new:.1f} s ({row['padding_share_sorted']:.0%} padding): {t_old / t_new:.2f}x; "
            f"max |score diff| {diff:.1e}, same ranking for {same:.0%} of questions"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    summary = {"command": "python bench/score_all.py", "rounds": args.rounds, "rows": results}
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
