"""Gradient signal: does a step of each objective point the same way on another batch, and toward gold?

For every objective (and G-Rerank's variants), the reranker's gradient of each of P HotpotQA questions
alone (its own noise seed), on the default recipe's trainable part (MiniLM bi-encoder, top 2 layers).
Every objective's batch gradient is the mean of its questions' (tests/test_signal.py), so from one pass:

- the cosine between the gradients of two disjoint random batches (20+ pairs, 95% interval): near 0,
  a step is a random walk under AdamW;
- the same at equal wall time: the batch the row's seconds per question buy against G-Rerank's batch 8;
- the agreement of the objective's expected gradient (the mean over all P questions) with the supervised
  one: the cosine, with a 95% bootstrap interval over questions. Does the signal point toward gold?

    python bench/gradient_signal.py                          # SmolLM2-135M, 64 questions (about 25 min)
    python bench/gradient_signal.py --reader qwen2.5-coder-0.5b-instruct --questions 32 --rows gumbel,reinforce-4,pdist,supervised

Rows are added to bench/results/gradient_signal.json (keyed by reader and row) and the table printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from common import ROOT, hotpot_questions

from gumbel_rerank.config import load
from gumbel_rerank.evaluation.signal import agreement, batch_cosines, interval, question_gradients
from gumbel_rerank.objectives import TeacherCache
from gumbel_rerank.readers import build_reader
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.training.stabilize import restrict_trainable

ROWS: dict[str, dict[str, Any]] = {  # name -> objective settings over configs/hotpotqa.yaml's
    "supervised": {"name": "supervised"},
    "gumbel": {"name": "gumbel"},
    "gumbel-2-samples": {"name": "gumbel", "samples": 2},
    "gumbel-antithetic-2": {"name": "gumbel", "samples": 2, "antithetic": True},
    "gumbel-4-samples": {"name": "gumbel", "samples": 4},
    "gumbel-straight-through": {"name": "gumbel", "straight_through": True},
    "gumbel-tau-0.1": {"name": "gumbel", "tau": 0.1},
    "reinforce-4": {"name": "reinforce", "samples": 4},
    "reinforce-1": {"name": "reinforce", "samples": 1},
    "adist": {"name": "adist"},
    "emdr": {"name": "emdr"},
    "pdist": {"name": "pdist"},
    "loop": {"name": "loop"},
    "lsr": {"name": "lsr"},
}
OUT = ROOT / "bench" / "results" / "gradient_signal.json"
BATCH, PAIRS = 8, 24


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reader", default="smollm2-135m-instruct")
    p.add_argument("--questions", type=int, default=64)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from: {', '.join(ROWS)} (supervised first)")
    args = p.parse_args()
    names = [n.strip() for n in args.rows.split(",")]
    if names[0] != "supervised":
        names = ["supervised", *[n for n in names if n != "supervised"]]  # the reference for the agreement column
    cfg = load(ROOT / "configs" / "hotpotqa.yaml", [f"reader.model={args.reader}", "reader.doc_cache_mb=6000"])
    examples = hotpot_questions(args.questions)
    reader = build_reader(cfg.reader)
    teachers = TeacherCache()
    reranker = Reranker.from_config(cfg.reranker)
    restrict_trainable(reranker, cfg.train.train_layers)
    saved = json.loads(OUT.read_text()) if OUT.exists() and "rows" in json.loads(OUT.read_text()) else {}
    rows = {(r["reader"], r["row"]): r for r in saved.get("rows", []) if "row" in r}
    for ex in examples:  # every row reads the docs from the doc cache: no row's time includes encoding them
        reader.prepare([ex])
    grads, seconds = {}, {}
    for name in names:
        ocfg = dataclasses.replace(cfg.objective, **ROWS[name], log_hard_loss=False)
        grads[name], seconds[name] = question_gradients(ocfg, reranker, reader, examples, teachers=teachers, progress=True)
        print(f"{args.reader} {name}: {seconds[name]:.2f} s per question", flush=True)
    ref_time = seconds.get("gumbel", seconds[names[-1]])
    for name in names:
        g = grads[name]
        equal_batch = max(1, min(args.questions // 2, round(BATCH * ref_time / seconds[name])))
        cos8 = interval(batch_cosines(g, min(BATCH, args.questions // 2), PAIRS, seed=1))
        cos_eq = interval(batch_cosines(g, equal_batch, PAIRS, seed=2))
        agree = agreement(g, grads["supervised"])
        rows[args.reader, name] = {
            "reader": args.reader,
            "row": name,
            "settings": ROWS[name],
            "questions": args.questions,
            "seconds_per_question": seconds[name],
            "cos_batch_8": cos8,
            "equal_time_batch": equal_batch,
            "cos_equal_time": cos_eq,
            "agreement_with_supervised": agree,
        }
    OUT.write_text(
        json.dumps(
            {
                "command": "python bench/gradient_signal.py [--reader R --questions P --rows ...]",
                "config": "configs/hotpotqa.yaml (MiniLM bi-encoder, top 2 layers trainable, parallel layout, k = 5)",
                "pairs": PAIRS,
                "batch": BATCH,
                "measured": time.strftime("%Y-%m-%d"),
                "rows": list(rows.values()),
            },
            indent=1,
        )
    )
    print(table(list(rows.values())))


def table(rows: list[dict[str, Any]]) -> str:
    def ci(c: list[float]) -> str:
        return f"{c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]"

    lines = [
        "| reader | row | s / question | cos, disjoint batches of 8 | batch at G-Rerank's time | cos there "
        "| agreement with supervised |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['reader']} | {r['row']} | {r['seconds_per_question']:.2f} | {ci(r['cos_batch_8'])} | "
            f"{r['equal_time_batch']} | {ci(r['cos_equal_time'])} | {ci(r['agreement_with_supervised'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
