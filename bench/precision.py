"""What reader precision costs the training signal: bf16 / fp16 readers against fp32 on the same questions.

For each real HotpotQA question (10 paragraphs, 160 tokens each, parallel layout) and each reader:
the answer NLL per token with every doc at weight 0.5, and the gradient of that NLL with respect to
the 10 doc weights (what G-Rerank trains from). Reports, per reduced dtype against fp32: max and
mean |diff| of the NLL, the cosine between the weight gradients, and the share of docs whose
gradient has the same sign; and the seconds per question of each dtype (forward + backward).

    python bench/precision.py [--questions 50] [--readers smollm2-135m-instruct,gemma-3-270m] [--dtypes bfloat16,docs:bfloat16]
    # SmolLM2 and Gemma on 50 questions, both variants: about 30 minutes on 2 cores

``bfloat16`` is the whole reader in bf16 (``reader.dtype``); ``docs:bfloat16`` an fp32 reader whose
docs (the no-gradient part) are encoded and cached in bf16 (``reader.doc_dtype``); ``cache:float16``
docs encoded in fp32 and their keys and values kept in fp16 (``reader.doc_cache_dtype``).

Writes bench/results/precision.json and prints a markdown table. fp16 on a CPU is emulated and
slow; it is meant for GPUs (bench/gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import ROOT, hotpot_questions

from gumbel_rerank.config import ReaderConfig
from gumbel_rerank.objectives import Batch
from gumbel_rerank.readers import build_reader


def signal(reader, examples):  # type: ignore[no-untyped-def]
    """Per question: (answer NLL, gradient w.r.t. the doc weights, seconds)."""
    out = []
    for ex in examples:
        t = time.perf_counter()
        batch = Batch([ex])
        w = torch.full((1, 1, len(ex.docs)), 0.5, requires_grad=True)
        nll = -reader.answer_logprob(batch.context(reader), w).mean().sum()
        nll.backward()
        out.append((float(nll.detach()), w.grad.flatten().double(), time.perf_counter() - t))  # type: ignore[union-attr]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--readers", default="smollm2-135m-instruct,gemma-3-270m")
    p.add_argument("--dtypes", default="bfloat16,docs:bfloat16")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "precision.json"))
    args = p.parse_args()
    examples = hotpot_questions(args.questions, 10)
    rows = []
    for model in args.readers.split(","):
        results = {}
        for dtype in ["float32", *args.dtypes.split(",")]:
            where, _, name = dtype.rpartition(":")
            precision = {{"docs": "doc_dtype", "cache": "doc_cache_dtype"}.get(where, "dtype"): name}
            reader = build_reader(ReaderConfig(model=model, layout="parallel", max_doc_tokens=160, **precision))
            results[dtype] = signal(reader, examples)
            del reader
        ref = results["float32"]
        for dtype in args.dtypes.split(","):
            got = results[dtype]
            diffs = [abs(a[0] - b[0]) for a, b in zip(ref, got, strict=True)]
            cos = [float(torch.nn.functional.cosine_similarity(a[1], b[1], dim=0)) for a, b in zip(ref, got, strict=True)]
            sign = [float((torch.sign(a[1]) == torch.sign(b[1])).double().mean()) for a, b in zip(ref, got, strict=True)]
            row = {
                "reader": model,
                "dtype": dtype,
                "questions": len(examples),
                "nll_max_abs_diff": max(diffs),
                "nll_mean_abs_diff": sum(diffs) / len(diffs),
                "grad_cosine_mean": sum(cos) / len(cos),
                "grad_cosine_min": min(cos),
                "grad_sign_agreement": sum(sign) / len(sign),
                "seconds_per_question_fp32": sum(r[2] for r in ref) / len(ref),
                "seconds_per_question": sum(r[2] for r in got) / len(got),
            }
            rows.append(row)
    result = {
        "command": "python bench/precision.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(
        "| reader | dtype | NLL max / mean abs diff | grad cosine mean (min) | grad sign agreement | s/question fp32 -> dtype |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['reader']} | {r['dtype']} | {r['nll_max_abs_diff']:.4f} / {r['nll_mean_abs_diff']:.4f} | "
            f"{r['grad_cosine_mean']:.4f} ({r['grad_cosine_min']:.3f}) | {r['grad_sign_agreement']:.1%} | "
            f"{r['seconds_per_question_fp32']:.2f} -> {r['seconds_per_question']:.2f} |"
        )


if __name__ == "__main__":
    main()
