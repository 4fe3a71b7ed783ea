"""How many docs does G-Rerank's relaxed top-k mask hold, and which docs get a gradient?

For every relaxation x calibration x kappa, on the reranker scores G-Rerank actually sees at the
start of training (real MiniLM scores of real HotpotQA questions: the bi-encoder's cosine / 0.05,
and a cross-encoder with a fresh head), plus synthetic unit-scale scores, it prints:
mask_sum (sum of M, target k), mask_distinct (docs picked by the draws' argmax), mask_overlap
(share of the hard top-k that M keeps above 0.5), max_entry (a weight above 1 up-weights a doc
beyond "present"), and beyond_top2 (share of the gradient |dM/dw| reaching docs ranked 3..N,
the docs a collapsed mask cannot train). The masks come from GumbelObjective.draw, the code path
that training uses.

    python bench/mask_calibration.py [--questions 100] [--k 5]   # about 1 minute on 2 cores

Writes bench/results/mask_calibration.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json

import torch
from common import ROOT, hotpot_questions

from gumbel_rerank.config import ObjectiveConfig
from gumbel_rerank.evaluation.evaluate import score_all
from gumbel_rerank.objectives.gumbel import GumbelObjective
from gumbel_rerank.rerankers import Reranker

SETTINGS: list[tuple[str, dict[str, object]]] = [  # (row name, objective overrides)
    ("calibrated (default): threshold + standardize, kappa 1", {}),
    ("threshold + standardize, kappa 0.5", {"kappa": 0.5}),
    ("l2x + standardize, kappa 1", {"relaxation": "l2x"}),
    ("subset + standardize, kappa 1", {"relaxation": "subset"}),
    ("old: l2x, fixed kappa 1", {"relaxation": "l2x", "calibration": "none"}),
    ("old: l2x, fixed kappa 0.3", {"relaxation": "l2x", "calibration": "none", "kappa": 0.3}),
    ("threshold, fixed kappa 1", {"calibration": "none"}),
]


def measure(scores: torch.Tensor, k: int, overrides: dict[str, object], samples: int = 8) -> dict[str, float]:
    obj = GumbelObjective(ObjectiveConfig(k=k, tau=0.5, samples=samples, **overrides))  # type: ignore[arg-type]
    valid = torch.ones_like(scores, dtype=torch.bool)
    w = scores.clone().requires_grad_(True)
    gens = [torch.Generator().manual_seed(1000 + b) for b in range(scores.shape[0])]
    drawn = obj.draw(w, valid, 0.5, gens)
    metrics = obj.telemetry(drawn, scores, valid)
    upstream = torch.randn(drawn.masks.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((drawn.masks * upstream).sum(), w)
    order = scores.argsort(-1, descending=True)
    ranked = grad.abs().gather(-1, order)  # (B, N) by the reranker's rank
    metrics["max_entry"] = drawn.masks.max().item()
    metrics["beyond_top2"] = (ranked[:, 2:].sum() / ranked.sum().clamp_min(1e-30)).item()
    return metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=100)
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args()
    examples = hotpot_questions(args.questions)
    score_sets = {}
    for kind in ("bi", "cross"):
        torch.manual_seed(0)  # the fresh cross-encoder head's initialisation
        reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind=kind, max_length=256)
        score_sets[f"MiniLM {kind}-encoder" + (" (fresh head)" if kind == "cross" else " (cosine / 0.05)")] = torch.tensor(
            score_all(reranker, examples, batch_size=16)
        )
    score_sets["synthetic unit normal"] = torch.randn(args.questions, 10, generator=torch.Generator().manual_seed(0))
    rows = []
    for scale_name, scores in score_sets.items():
        spread = (scores.max(-1).values - scores.min(-1).values).mean().item()
        for name, overrides in SETTINGS:
            rows.append({"scores": scale_name, "score_range": spread, "setting": name, **measure(scores, args.k, overrides)})
    cols = ("mask_sum", "mask_distinct", "mask_overlap", "max_entry", "beyond_top2")
    print(f"k={args.k}, tau=0.5, {args.questions} HotpotQA questions x 10 docs, 8 Gumbel samples each\n")
    print("| scores (mean max-min range) | setting | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['scores']} ({r['score_range']:.2f}) | {r['setting']} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |")
    out = ROOT / "bench" / "results" / "mask_calibration.json"
    out.write_text(
        json.dumps(
            {"command": "python bench/mask_calibration.py", "k": args.k, "tau": 0.5, "questions": args.questions, "rows": rows},
            indent=2,
        )
    )
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
