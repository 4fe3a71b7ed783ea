"""How the parallel reader batches the docs it encodes: one padded batch, length buckets per question
(the default) or length buckets across the whole batch, at training batch sizes 1, 2 and 4.

    python bench/doc_buckets.py [--questions 12 --rounds 2]   # about 12 minutes on 2 cores

Real HotpotQA questions (10 paragraphs, up to 160 tokens each), SmolLM2-135M, docs encoded without
gradient in bf16 (``reader.doc_dtype: auto`` on a bf16 CPU) and in fp32. Each figure is the median
seconds per question over the rounds and batches. Writes bench/results/doc_buckets.json.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
from common import ROOT, hotpot_questions, median

from gumbel_rerank.models import load_causal_lm
from gumbel_rerank.readers import make_reader

MODES = ("one padded batch", "buckets per question", "buckets across the batch")


def encode(reader, docs, prefix, mode: str) -> None:  # type: ignore[no-untyped-def]
    """Encode ``docs`` (one list per question) the way ``mode`` says."""
    reader.bucket_ratio = 0.0 if mode == "one padded batch" else 0.8
    reader._encode_docs(docs if mode == "buckets per question" else [[d for q in docs for d in q]], prefix)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=12)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "doc_buckets.json"))
    args = p.parse_args()
    questions = hotpot_questions(args.questions, 10)
    model, tokenizer = load_causal_lm("smollm2-135m-instruct", dtype=torch.float32)
    rows = []
    print("| docs | batch | " + " | ".join(f"{m} s/question" for m in MODES) + " |")
    print("|---|---|" + "---|" * len(MODES))
    for doc_dtype in (torch.bfloat16, None):
        reader: Any = make_reader("parallel", model, tokenizer, max_doc_tokens=160, doc_dtype=doc_dtype)  # no doc cache
        prefix = reader._prefix_ids()
        for size in (1, 2, 4):
            batches = [questions[i : i + size] for i in range(0, len(questions) - size + 1, size)]
            times: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.rounds):
                for batch in batches:
                    docs = [reader._doc_ids(ex) for ex in batch]
                    for mode in MODES:  # the modes alternate batch by batch: like with like on a noisy machine
                        start = time.perf_counter()
                        encode(reader, docs, prefix, mode)
                        times[mode].append((time.perf_counter() - start) / size)
            row = {"docs": "bf16" if doc_dtype else "fp32", "batch": size, **{m: median(t) for m, t in times.items()}}
            rows.append(row)
            print(f"| {row['docs']} | {size} | " + " | ".join(f"{row[m]:.2f}" for m in MODES) + " |", flush=True)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": "python bench/doc_buckets.py", "questions": args.questions, "rows": rows}, f, indent=2)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
