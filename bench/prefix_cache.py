"""An evaluation pass of a training run with and without the frozen-bottom cache (eval.prefix_cache_mb).

    python bench/prefix_cache.py          # about 2.5 minutes on 2 cores (--questions 20: 1.2)

The reproduction's reranker (MiniLM-L6 bi-encoder, train.train_layers: 2, so 4 of its 6 layers and
the embeddings are frozen) scores HotpotQA questions as every periodic evaluation does
(`score_all`). Each round runs the whole encoder once and the cached one once, alternating which
goes first; the cached one was filled before the first round, as it is after a run's first
evaluation. Reports the median time of each, their ratio, the largest score difference and
whether every question's ranking is the same.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, hotpot_questions, median, timed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "prefix_cache.json"))
    args = p.parse_args()

    from gumbel_rerank.data.schema import rank
    from gumbel_rerank.evaluation.evaluate import score_all
    from gumbel_rerank.rerankers import Reranker
    from gumbel_rerank.training.stabilize import restrict_trainable

    whole = Reranker.from_pretrained("all-minilm-l6-v2", kind="bi", max_length=256)
    restrict_trainable(whole, 2)
    cached = copy.deepcopy(whole)
    assert cached.keep_frozen_prefix(2048)
    questions = hotpot_questions(args.questions, 10)
    fill = timed(functools.partial(score_all, cached, questions), repeats=1, warmup=0)[0]
    contenders = {"whole encoder": whole, "frozen bottom kept": cached}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name in contenders if r % 2 == 0 else reversed(list(contenders)):
            times[name] += timed(functools.partial(score_all, contenders[name], questions), repeats=1, warmup=0)
    a, b = score_all(whole, questions), score_all(cached, questions)
    diff = max(abs(x - y) for qa, qb in zip(a, b, strict=True) for x, y in zip(qa, qb, strict=True))
    same = sum(rank(qa) == rank(qb) for qa, qb in zip(a, b, strict=True)) / len(a)
    t_whole, t_cached = median(times["whole encoder"]), median(times["frozen bottom kept"])
    result = {
        "questions": len(questions),
        "docs": sum(len(q.docs) for q in questions),
        "whole_s": t_whole,
        "cached_s": t_cached,
        "first_fill_s": fill,
        "speedup": t_whole / t_cached,
        "max_abs_score_diff": diff,
        "same_ranking": same,
        "kept_mb": cached.prefix_cache.store.used / 2**20,
    }
    print(
        f"score_all over {result['docs']} docs ({len(questions)} HotpotQA questions), median of {args.rounds} rounds:\n"
        f"  whole encoder {t_whole:.1f} s, frozen bottom kept {t_cached:.1f} s: {t_whole / t_cached:.2f}x "
        f"(first pass, filling: {fill:.1f} s; {result['kept_mb']:.0f} MB kept)\n"
        f"  max |score diff| {diff:.1e}, same ranking for {same:.0%} of questions"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
