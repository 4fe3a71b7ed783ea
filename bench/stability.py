"""Stable updates, measured side by side on the same batches (issue: training that does not destroy its start).

G-Rerank on HotpotQA (real MiniLM bi-encoder, real SmolLM2-135M, parallel layout), the same
questions, batches and Gumbel draws for every variant; one reader and doc cache shared by all.
Every ``--eval-every`` steps: the label-free validation answer NLL under the hard top-5 (what
``train.select=val_loss`` picks by) and the held-out gold R@5 (labels, for this report only).

    python bench/stability.py [--train 48 --val 8 --held-out 40 --steps 60]   # 47 minutes on 2 cores (measured)

Variants: the old shipped settings (lr 3e-5, constant), then lr 1e-5 with warmup and linear
decay, plus 2 Gumbel samples, plus the trust region (kl_to_start), plus training only the top 2
layers. Writes bench/results/stability.json and stability.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

from common import ROOT

from gumbel_rerank.config import load
from gumbel_rerank.readers import build_reader
from gumbel_rerank.training.loop import train

BASE = ["train.lr=1e-5", "train.warmup_steps=6", "train.schedule=linear"]
VARIANTS = {
    "old: lr 3e-5 constant": ["train.lr=3e-5", "train.warmup_steps=0", "train.schedule=constant"],
    "lr 1e-5, warmup, linear decay": BASE,
    "+ 2 Gumbel samples": [*BASE, "objective.samples=2"],
    "+ kl_to_start 1": [*BASE, "objective.kl_to_start=1.0"],
    "+ top 2 layers only": [*BASE, "train.train_layers=2"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=48)
    p.add_argument("--val", type=int, default=8)
    p.add_argument("--held-out", type=int, default=40)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=10)
    args = p.parse_args()
    common = [
        f"data.num_train={args.train}",
        f"data.num_val={args.val}",
        f"data.num_eval={args.held_out}",
        f"train.steps={args.steps}",
        f"train.eval_every={args.eval_every}",
        "train.checkpoint_every=0",
        "train.select=val_loss",
        "eval.generate=false",
        "reader.doc_cache_mb=8000",
        "objective.log_hard_loss=false",
    ]
    reader = None
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in VARIANTS.items():
            cfg = load(ROOT / "configs" / "hotpotqa.yaml", [*common, *extra, f"train.out_dir={tmp}/{len(rows)}"])
            reader = reader or build_reader(cfg.reader)
            t = time.perf_counter()
            result = train(cfg, progress=False, reader=reader)
            lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
            points = [x for x in lines if "val_loss" in x]
            steps = [x for x in lines if "loss" in x]
            report = json.loads((result.run_dir / "report.json").read_text())
            rows.append(
                {
                    "variant": name,
                    "overrides": extra,
                    "points": points,
                    "seconds": time.perf_counter() - t,
                    "train_loss": [x["loss"] for x in steps],
                    "grad_norm": [x["grad_norm"] for x in steps],
                    "selection": report["selection"],
                    "before_R@5": result.before["R@5"],
                    "selected_R@5": result.after["R@5"],
                    "last_R@5": points[-1].get("held_out_R@5"),
                }
            )
            print(
                f"{name}: R@5 start {result.before['R@5']:.3f}, last {rows[-1]['last_R@5']:.3f}, selected "
                f"{result.after['R@5']:.3f} (step {report['selection']['selected_step']}), {rows[-1]['seconds']:.0f} s",
                flush=True,
            )
    out = ROOT / "bench" / "results" / "stability.json"
    out.write_text(json.dumps({"command": "python bench/stability.py", "args": vars(args), "rows": rows}, indent=2))
    plot(rows, ROOT / "bench" / "results" / "stability.png")
    print("\n| variant | held-out R@5 start | last step | selected (step) | Spearman(-val loss, R@5) | mean grad norm |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        s = r["selection"]
        rho = s.get("spearman_neg_val_loss_vs_held_out_R@5")
        print(
            f"| {r['variant']} | {r['before_R@5']:.3f} | {r['last_R@5']:.3f} | {r['selected_R@5']:.3f} "
            f"({s['selected_step']}) | {'n/a' if rho is None else f'{rho:+.2f}'} | "
            f"{sum(r['grad_norm']) / len(r['grad_norm']):.1f} |"
        )
    print(f"\nwritten: {out}")


def plot(rows: list[dict], path) -> None:  # type: ignore[no-untyped-def, type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        steps = [p["step"] for p in r["points"]]
        a.plot(steps, [p["held_out_R@5"] for p in r["points"]], "o-", label=r["variant"])
        b.plot(steps, [p["val_loss"] for p in r["points"]], "o-", label=r["variant"])
    a.set(xlabel="step", ylabel="held-out gold R@5 (report only)")
    b.set(xlabel="step", ylabel="validation answer NLL, top-5 docs (label-free)")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
