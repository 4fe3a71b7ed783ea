"""Gradient signal: cosines between reranker gradients that should agree (issue: stable training).

For G-Rerank, the cosine between the gradients of two independent Gumbel draws on the same batch,
by Gumbel samples per question and batch size; for every objective, the cosine between the
gradients of two disjoint batches of the same size (its minibatch noise). Real MiniLM bi-encoder
and SmolLM2-135M reader (parallel layout) on HotpotQA, the configs/hotpotqa.yaml settings.

    python bench/gradient_signal.py [--pairs 2]   # about 10 minutes on 2 cores

Writes bench/results/gradient_signal.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from common import ROOT, hotpot_questions

from gumbel_rerank.config import load
from gumbel_rerank.evaluation.signal import gradient_agreement
from gumbel_rerank.objectives import TeacherCache
from gumbel_rerank.readers import build_reader
from gumbel_rerank.rerankers import Reranker

GUMBEL = [(1, 2), (2, 2), (4, 2), (1, 4), (1, 8)]  # (samples, batch size)
RIVALS = ["adist", "emdr", "pdist", "loop", "lsr", "supervised"]
RIVAL_BATCHES = [2, 8]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2)
    args = p.parse_args()
    cfg = load(ROOT / "configs" / "hotpotqa.yaml", ["reader.doc_cache_mb=6000"])
    examples = hotpot_questions(2 * args.pairs * max(b for _, b in GUMBEL))
    reader = build_reader(cfg.reader)
    teachers = TeacherCache()
    reranker = Reranker.from_pretrained(
        cfg.reranker.model, kind=cfg.reranker.kind, max_length=cfg.reranker.max_length, temperature=cfg.reranker.temperature
    )
    rows = []
    runs = [("gumbel", s, b) for s, b in GUMBEL] + [(o, 1, b) for o in RIVALS for b in RIVAL_BATCHES]
    for name, samples, batch in runs:
        t = time.perf_counter()
        ocfg = dataclasses.replace(cfg.objective, name=name, samples=samples, log_hard_loss=False)
        r = gradient_agreement(ocfg, reranker, reader, examples, batch_size=batch, pairs=args.pairs, teachers=teachers)
        r["seconds"] = time.perf_counter() - t
        rows.append(r)
        print(
            f"{name} samples={samples} batch={batch}: noise {r['noise']['mean']:+.3f} "
            f"minibatch {r['minibatch']['mean']:+.3f} ({r['seconds']:.0f} s)",
            flush=True,
        )
    print("\n| objective | Gumbel samples | batch | cos, same batch / two Gumbel draws | cos, two disjoint batches |")
    print("|---|---|---|---|---|")
    for r in rows:
        noise = f"{r['noise']['mean']:+.3f} ± {r['noise']['sd']:.3f}" if r["objective"] == "gumbel" else "1 (deterministic)"
        print(
            f"| {r['objective']} | {r['samples']} | {r['batch_size']} | {noise} | "
            f"{r['minibatch']['mean']:+.3f} ± {r['minibatch']['sd']:.3f} |"
        )
    out = ROOT / "bench" / "results" / "gradient_signal.json"
    out.write_text(
        json.dumps(
            {"command": "python bench/gradient_signal.py", "pairs": args.pairs, "config": "configs/hotpotqa.yaml", "rows": rows},
            indent=2,
        )
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
