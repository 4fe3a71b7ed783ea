"""The reranker's own training step (forward and backward) by length-group ratio, with and without dropout.

    python bench/reranker_step.py                 # about 3 minutes on 2 cores
    python bench/reranker_step.py --steps 8 --out bench/results/reranker_step.json

Real MiniLM (``all-minilm-l6-v2``) as the experiments' two reranker kinds: the bi-encoder with its top 2
layers trained and the cross-encoder with all layers trained, under ``reranker.precision: auto`` (bf16
autocast where the CPU has it). Each step scores 2 HotpotQA questions of 10 paragraphs, as a planned
row's batch does. ``Reranker.bucket_ratio`` 0 is one batch padded to its longest input (before length
groups); the default runs groups whose every input is at least that share of the group's longest.
Dropout on is ``train.dropout: true``, the loop's default. Every setting runs in this one process on the
same questions, rounds alternating; each figure is the median step over all rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, hotpot_questions, median

RATIOS = (0.0, 0.5, 0.65, 0.8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="steps per setting and round (2 questions each)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "reranker_step.json"))
    args = p.parse_args()
    from gumbel_rerank.rerankers import Reranker

    questions = hotpot_questions(2 * (args.steps + 1), 10)
    batches = [questions[i : i + 2] for i in range(0, len(questions), 2)]
    rerankers = {}
    for kind in ("bi", "cross"):
        r = Reranker.from_pretrained("all-minilm-l6-v2", kind=kind, max_length=256, temperature=0.05)
        if kind == "bi":  # train.train_layers: 2, as the bi-encoder rows
            for name, param in r.named_parameters():
                param.requires_grad = any(f"layer.{i}." in name for i in (4, 5))
        r.precision = "auto"
        rerankers[kind] = r
    default = {kind: r.bucket_ratio for kind, r in rerankers.items()}
    times: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for kind, r in rerankers.items():
            for dropout in (True, False):
                for ratio in RATIOS if round_ % 2 == 0 else reversed(RATIOS):
                    r.bucket_ratio = ratio
                    r.train(dropout)
                    for i, batch in enumerate(batches):
                        start = time.perf_counter()
                        r(batch).sum().backward()
                        r.zero_grad()
                        if i:  # the first step of each setting warms up
                            times.setdefault(f"{kind}|{dropout}|{ratio}", []).append(time.perf_counter() - start)
    rows: list[dict[str, object]] = []
    for key, values in times.items():
        which, on, share = key.split("|")
        padded = median(times[f"{which}|{on}|0.0"])
        rows.append(
            {
                "kind": which,
                "dropout": on == "True",
                "ratio": float(share),
                "seconds": median(values),
                "vs_one_padded_batch": median(values) / padded,
            }
        )
    Path(args.out).write_text(
        json.dumps({"default_ratio": default, "steps": args.steps, "rounds": args.rounds, "rows": rows}, indent=2)
    )
    print(f"median s per reranker step (forward + backward, 2 questions x 10 paragraphs); default ratio {default}")
    print("| reranker | dropout | ratio | s/step | vs one padded batch |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['kind']} | {'on' if row['dropout'] else 'off'} | {row['ratio']:g} | {row['seconds']:.3f} | "
            f"{row['vs_one_padded_batch']:.2f} |"
        )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
