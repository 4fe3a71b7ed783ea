"""Reranking speed: our Reranker.predict (fp32, bf16), its ONNX export under onnxruntime (fp32, int8)
and sentence-transformers' CrossEncoder.predict, in one run; then the int8 export's HotpotQA R@5.

    python bench/rerank_throughput.py          # about 8 minutes on 2 cores

Same weights (the MiniLM cross-encoder exported with our `export`), same batch size (32), same
HotpotQA question-paragraph pairs. Each round runs every contender once, in alternating order;
the figures are medians over the rounds. Then latency of one query with 10 and with 100
candidates (p50/p95 over repeated calls). bf16 rows run under CPU bfloat16 autocast; their
scores are compared with float32 (max difference, top-5 agreement) so speed is not bought with
silently different rankings.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, hotpot_questions, median, percentile, timed


def top5(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])[:5]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--recall-questions", type=int, default=159, help="HotpotQA held-out questions for R@5 (0: skip)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "rerank_throughput.json"))
    args = p.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    from gumbel_rerank.data.schema import doc_text
    from gumbel_rerank.onnx_reranker import OnnxReranker
    from gumbel_rerank.rerankers import Reranker
    from gumbel_rerank.serving.export import export_onnx

    torch.manual_seed(0)
    reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind="cross", max_length=256).eval()
    with tempfile.TemporaryDirectory() as tmp:
        reranker.save_pretrained(tmp)
        ce = CrossEncoder(tmp, max_length=256, activation_fn=torch.nn.Identity())
        export_onnx(reranker, Path(tmp) / "onnx")
        onnx32 = OnnxReranker.from_pretrained(tmp)
        onnx8 = OnnxReranker.from_pretrained(tmp, variant="int8")
    questions = hotpot_questions(args.questions, 10)
    pairs = [(ex.question, doc_text(d.title, d.text)) for ex in questions for d in ex.docs]
    bs = args.batch_size
    contenders: dict[str, Callable[[list[tuple[str, str]]], list[float]]] = {
        "sentence-transformers CrossEncoder.predict": lambda ps: ce.predict(ps, batch_size=bs).tolist(),
        "gumbel-rerank predict (fp32)": lambda ps: reranker.predict(ps, batch_size=bs),
        "gumbel-rerank predict (bf16 autocast)": lambda ps: reranker.predict(ps, batch_size=bs, precision="bf16"),
        "gumbel-rerank ONNX fp32 (onnxruntime)": lambda ps: onnx32.predict(ps, batch_size=bs),
        "gumbel-rerank ONNX int8 (onnxruntime)": lambda ps: onnx8.predict(ps, batch_size=bs),
    }
    reference = contenders["sentence-transformers CrossEncoder.predict"](pairs)
    agreement = {}
    for name, fn in contenders.items():
        scores = fn(pairs)
        top = [top5(scores[q * 10 : q * 10 + 10]) for q in range(len(questions))]
        ref = [top5(reference[q * 10 : q * 10 + 10]) for q in range(len(questions))]
        agreement[name] = {
            "max_abs_diff": max(abs(a - b) for a, b in zip(scores, reference, strict=True)),
            "same_top5_order": sum(a == b for a, b in zip(top, ref, strict=True)) / len(top),
        }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name] += timed(functools.partial(contenders[name], pairs), repeats=1, warmup=0 if r else 1)
    base = median(times[names[0]])
    print(
        f"throughput, {len(pairs)} pairs ({len(questions)} HotpotQA questions x 10 paragraphs), batch {bs}, "
        f"median of {args.rounds} alternating rounds"
    )
    print("| contender | pairs/s | speed-up vs CrossEncoder | max |score diff| | same top-5 order |\n|---|---|---|---|---|")
    result: dict[str, dict[str, float]] = {}
    for name in names:
        t = median(times[name])
        result[name] = {"pairs_per_s": len(pairs) / t, "speedup": base / t, **agreement[name]}
        print(
            f"| {name} | {len(pairs) / t:.1f} | {base / t:.2f}x | {agreement[name]['max_abs_diff']:.1e} | "
            f"{agreement[name]['same_top5_order']:.0%} |"
        )
    print("\nlatency of one query (p50 / p95 ms over repeated calls)")
    docs = [doc_text(d.title, d.text) for ex in hotpot_questions(10, 10) for d in ex.docs]
    latency: dict[str, dict[str, float]] = {}
    for n, repeats in ((10, 30), (100, 8)):
        one_query = [(questions[0].question, d) for d in docs[:n]]
        for name in names:
            ms = [t * 1000 for t in timed(functools.partial(contenders[name], one_query), repeats)]
            latency[f"{name} @ {n} docs"] = {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95)}
            print(f"  {n:>3} docs  {name:<42} p50 {percentile(ms, 50):7.1f}  p95 {percentile(ms, 95):7.1f}")
    recall = onnx_recall(args.recall_questions)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"throughput": result, "latency": latency, "hotpotqa_recall": recall}, indent=2))
    print(f"results: {args.out}")


def onnx_recall(questions: int) -> dict[str, float]:
    """R@5 of the zero-shot MiniLM bi-encoder (the experiments' start) on the HotpotQA group's held-out
    questions: PyTorch, ONNX fp32 and ONNX int8 (the int8 price in ranking quality)."""
    if questions <= 0:
        return {}
    from gumbel_rerank.config import load
    from gumbel_rerank.data import load_splits
    from gumbel_rerank.data.schema import doc_text, rank
    from gumbel_rerank.evaluation.metrics import recall_at_k
    from gumbel_rerank.onnx_reranker import OnnxReranker
    from gumbel_rerank.rerankers import Reranker
    from gumbel_rerank.serving.export import export_onnx

    cfg = load(ROOT / "experiments" / "configs" / "hotpotqa" / "gumbel.yaml")
    _, held_out = load_splits(cfg.data)
    held_out = held_out[:questions]
    bi = Reranker.from_config(cfg.reranker).eval()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(bi, Path(tmp))
        scorers: dict[str, Any] = {
            "PyTorch fp32": bi,
            "ONNX fp32": OnnxReranker.from_pretrained(tmp),
            "ONNX int8": OnnxReranker.from_pretrained(tmp, variant="int8"),
        }
        for name, scorer in scorers.items():
            recalls = []
            for ex in held_out:
                s = scorer.predict([(ex.question, doc_text(d.title, d.text)) for d in ex.docs])
                recalls.append(recall_at_k(rank(s), [i for i, d in enumerate(ex.docs) if d.is_gold], 5))
            out[name] = sum(recalls) / len(recalls)
    print(f"\nHotpotQA held-out R@5 (zero-shot MiniLM bi-encoder, {len(held_out)} questions):")
    for name, value in out.items():
        print(f"  {name:<14} {value:.3f}")
    return {"questions": len(held_out), **out}


if __name__ == "__main__":
    main()
