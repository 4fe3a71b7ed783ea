"""Training-step cost of G-Rerank against the floor, a naive implementation and the rivals.

    python bench/train_step.py            # everything below, about 25 minutes on 2 cores
    python bench/train_step.py --quick    # fewer repeats and no N=50
    python bench/train_step.py --variants supervised,gumbel,gumbel-bf16docs,gumbel-bf16,naive,naive-bf16 --sizes '' \
        --out bench/results/train_step_precision.json
        # only the precision comparison (about 8 minutes)

Real models (MiniLM cross-encoder reranker, SmolLM2-135M reader), one HotpotQA question per step
with N candidate paragraphs (max 160 tokens each). Every variant runs in its own process (peak
RSS is per process) and the variants alternate over rounds, so the ratios compare like with like
on this shared machine; each figure is the median step time over all rounds.

Variants: ``supervised`` (the reranker-only floor); ``gumbel`` (ours, parallel layout: docs
encoded once without gradient, only question and answer positions with gradient, LM head on the
answer only); ``gumbel-cached`` (the docs' encodings already in the reader's doc cache, as in a second
epoch or a second objective); ``gumbel-sequential`` (and ``gumbel-checkpointed``, the same with per-layer activation
recomputation); ``naive`` (what a straightforward implementation does: the
concatenated prompt, forward and backward over every position, LM head on every position);
``gumbel-bf16docs`` (an fp32 reader whose docs are encoded in bf16, ``reader.doc_dtype``: the CPU's
AVX512-BF16 on the no-gradient part only), ``gumbel-bf16`` and ``naive-bf16`` (the whole reader in
bf16, ``reader.dtype``, so that naive / ours compares equal precisions); the
rivals ``adist``/``emdr``/``pdist``/``loop``, ``cold`` (teacher computed in the step) and
``cached`` (teacher already in the cache). Every variant scores in eval mode (no dropout; the loop's
``train.dropout: false``) except ``supervised-dropout`` (bf16, dropout on: the loop's default) and
``-default``. ``-padded``/``-fastpadded``: ``gumbel``/``gumbel-fast`` with each question's docs encoded
as one batch padded to the longest (``bucket_ratio`` 0, as before the length buckets of
``readers/parallel.py``). ``-default``: what ``gumbel-rerank train`` runs by default on this machine
(``reader.doc_dtype`` and ``reranker.precision`` auto, dropout on, the hard-top-k loss logged);
``-defaultcached``: the default with the docs' encodings already in the reader's doc cache (as from
the second epoch on, or in any row after the first of a group); ``-defaultbefore``: ``-default`` with
the reranker's inputs in one padded batch and the answer pass on ``sdpa``, as before the reranker's
length groups and ``readers/attention.py``;
``supervised-dropoutpadded``: the dropout floor with one padded batch. ``-fastsdpa``: ``gumbel-fast``
with the answer pass on ``sdpa``. ``-rbf16``: the reranker's forward and backward under
bf16 autocast (``reranker.precision: bf16``); ``gumbel-fast``: that and bf16 docs together. For
these the run also reports the cosine between the reranker's bf16 and fp32 gradients on the same
questions and noise (``grad_cosine``: mean, min over 4 questions).

    python bench/train_step.py --sizes '' --rounds 2 --steps 3 \
        --variants supervised,supervised-rbf16,gumbel,gumbel-rbf16,gumbel-bf16docs,gumbel-fast,gumbel-cached \
        --out bench/results/train_step_rbf16.json   # the reranker precision (issue 44)
    python bench/train_step.py --sizes '' --rounds 3 --steps 3 \
        --variants supervised-rbf16,gumbel,gumbel-padded,gumbel-fast,gumbel-fastpadded \
        --out bench/results/train_step_buckets.json   # docs encoded in length buckets (issue 44)
    python bench/train_step.py --sizes '' --rounds 3 --steps 3 \
        --variants supervised-rbf16,gumbel,gumbel-fast,gumbel-fastsdpa,gumbel-cached \
        --out bench/results/train_step_grouped.json   # the grouped answer kernel (issue 44)
    python bench/train_step.py --sizes '' --rounds 3 --steps 3 \
        --variants gumbel,supervised-dropout,supervised-dropoutpadded,gumbel-default,gumbel-defaultbefore \
        --out bench/results/train_step_default.json   # the default step against its floor (issue 44)
    python bench/train_step.py --sizes '' --rounds 3 --steps 3 \
        --variants gumbel,supervised-dropout,gumbel-default,gumbel-defaultcached \
        --out bench/results/train_step_defaultcached.json   # the default step, cold and cached (issue 44)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import DOC_CACHE_MB, ROOT, default_reader, hotpot_questions, median, peak_rss_mb, timed

VARIANTS = [
    "supervised",
    "gumbel",
    "gumbel-cached",
    "gumbel-sequential",
    "gumbel-checkpointed",
    "naive",
    "gumbel-bf16docs",
    "gumbel-bf16",
    "naive-bf16",
    "supervised-rbf16",
    "gumbel-rbf16",
    "gumbel-fast",
    "gumbel-padded",
    "gumbel-fastpadded",
    "gumbel-fastsdpa",
    "supervised-dropout",
    "supervised-dropoutpadded",
    "gumbel-default",
    "gumbel-defaultbefore",
    "gumbel-defaultcached",
    "adist-cold",
    "adist-cached",
    "emdr-cold",
    "emdr-cached",
    "pdist-cold",
    "pdist-cached",
    "loop-cold",
    "loop-cached",
]


def naive_reader(model, tokenizer):  # type: ignore[no-untyped-def]
    """The sequential layout scored the straightforward way: logits at every position."""
    import torch

    from gumbel_rerank.masking import log_weights
    from gumbel_rerank.readers import SequentialReader
    from gumbel_rerank.readers.base import AnswerScores

    class NaiveReader(SequentialReader):
        def answer_logprob(self, context, doc_weights):  # type: ignore[no-untyped-def]
            ctx = context
            B, M = ctx.ids.shape[0], doc_weights.shape[1]
            T = ctx.answer_tokens
            mask, _ = self._mask_and_cache(ctx, log_weights(doc_weights))
            out = self.model(
                input_ids=ctx.ids.repeat_interleave(M, 0), attention_mask=mask, position_ids=ctx.pos.repeat_interleave(M, 0)
            )  # no logits_to_keep: every position
            logp = torch.log_softmax(out.logits.float(), dim=-1)[:, -T - 1 : -1]
            target = ctx.ids[:, -T:].repeat_interleave(M, 0)
            lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).reshape(B, M, T)
            return AnswerScores(lp, torch.arange(T).expand(B, T) >= (T - ctx.answer_len).unsqueeze(1))

    return NaiveReader(model, tokenizer, max_doc_tokens=160)


def run_one(variant: str, num_docs: int, steps: int) -> dict[str, float]:
    """Time ``steps`` training steps of one variant in this process (after one warm-up step)."""
    import torch

    from gumbel_rerank.config import ObjectiveConfig
    from gumbel_rerank.models import load_causal_lm
    from gumbel_rerank.objectives import OBJECTIVES, Batch, TeacherCache
    from gumbel_rerank.readers import make_reader
    from gumbel_rerank.rerankers import Reranker

    torch.manual_seed(0)
    questions = hotpot_questions(steps + 1, num_docs)
    reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind="cross", max_length=256)
    name, _, teacher = variant.partition("-")
    default = teacher.startswith("default")  # what `gumbel-rerank train` runs by default on this machine
    model, tokenizer = load_causal_lm("smollm2-135m-instruct", dtype=torch.bfloat16 if teacher == "bf16" else torch.float32)
    if name == "naive":
        reader, name = naive_reader(model, tokenizer), "gumbel"
    elif teacher in ("bf16docs", "fast", "fastpadded", "fastsdpa"):
        reader = make_reader("parallel", model, tokenizer, max_doc_tokens=160, doc_dtype=torch.bfloat16)
    elif default:  # reader.doc_dtype auto, as the loop resolves it
        reader = default_reader(model, tokenizer, DOC_CACHE_MB if teacher == "defaultcached" else 0)
    else:
        layout = "sequential" if teacher in ("sequential", "checkpointed") else "parallel"  # "bf16", "rbf16": parallel
        options = (
            {"gradient_checkpointing": teacher == "checkpointed"}
            if layout == "sequential"
            else {"doc_cache_mb": DOC_CACHE_MB if teacher == "cached" else 0}
        )
        reader = make_reader(layout, model, tokenizer, max_doc_tokens=160, **options)
    if teacher.endswith("padded"):  # the docs as one batch padded to the longest (before length buckets)
        reader.bucket_ratio = 0.0
    if teacher in ("dropoutpadded", "defaultbefore"):  # the reranker's inputs as one padded batch (before length groups)
        reranker.bucket_ratio = 0.0
    if teacher.endswith(("sdpa", "before")):  # the answer pass on transformers' sdpa kernel (before readers/attention.py)
        import gumbel_rerank.readers.decoder as decoder

        decoder.answer_kernel = lambda model: model.config._attn_implementation
    cfg = ObjectiveConfig(name=name, k=5, log_hard_loss=default)  # the default logs the hard-top-k loss too
    cache = TeacherCache()
    objective: Any = OBJECTIVES[name](cfg, cache)
    cosines = (
        grad_cosines(reranker, objective, reader, hotpot_questions(steps + 5, num_docs)[-4:])
        if teacher in ("rbf16", "fast")
        else []
    )
    bf16 = ("rbf16", "fast", "fastpadded", "fastsdpa", "dropout", "dropoutpadded")
    reranker.precision = "auto" if default else "bf16" if teacher in bf16 else "fp32"
    # dropout on, as the loop trains by default; every other variant in eval mode, as train.dropout=false
    reranker.train(default or teacher.startswith("dropout"))
    optimizer = torch.optim.AdamW(reranker.parameters(), lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    if teacher in ("cached", "defaultcached"):  # fill the cache first, outside the timing
        for ex in questions:
            objective(Batch([ex]), reranker([ex]).detach(), reader, generator)
    queue = list(questions)
    base_rss = peak_rss_mb()
    prepare: list[float] = []

    def step() -> None:
        ex = queue.pop(0)
        if teacher == "cold":
            objective.teachers = TeacherCache()  # nothing cached: the teacher runs inside the step
        batch = Batch([ex])
        t = time.perf_counter()
        if name != "supervised":  # the floor never touches the reader
            batch.context(reader)  # tokenising, and in the parallel layout encoding the docs (no gradient)
        prepare.append(time.perf_counter() - t)
        out = objective(batch, reranker([ex]), reader, generator)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    seconds = timed(step, repeats=steps, warmup=1)
    extra = {"grad_cosine": sum(cosines) / len(cosines), "grad_cosine_min": min(cosines)} if cosines else {}
    return {
        **extra,
        "seconds": median(seconds),
        "prepare_seconds": median(prepare[1:]),
        "peak_rss_mb": peak_rss_mb(),
        "loaded_rss_mb": base_rss,
    }


def grad_cosines(reranker: Any, objective: Any, reader: Any, questions: list[Any]) -> list[float]:
    """Per question: the cosine between the reranker's gradient with bf16 autocast and in fp32, same noise."""
    import torch

    from gumbel_rerank.objectives import Batch

    out = []
    for ex in questions:
        grads = []
        for precision in ("fp32", "bf16"):
            reranker.precision = precision
            reranker.zero_grad(set_to_none=True)
            objective(Batch([ex]), reranker([ex]), reader, torch.Generator().manual_seed(7)).loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in reranker.parameters() if p.grad is not None]))
        out.append(float(torch.nn.functional.cosine_similarity(grads[0].double(), grads[1].double(), dim=0)))
    reranker.zero_grad(set_to_none=True)
    return out


def ratios(s: dict[str, float]) -> list[str]:
    """The headline ratios among the variants that ran (same run, like with like)."""
    want = [
        ("naive / ours (fp32 reader)", "naive", "gumbel", "target >= 5x"),
        ("naive / ours, docs cached", "naive", "gumbel-cached", ""),
        ("naive / ours (bf16 reader)", "naive-bf16", "gumbel-bf16", "equal precision"),
        ("naive (fp32) / ours with bf16 docs", "naive", "gumbel-bf16docs", ""),
        ("ours with bf16 docs / ours (fp32)", "gumbel-bf16docs", "gumbel", "target <= 0.55"),
        ("ours bf16 reader / ours (fp32)", "gumbel-bf16", "gumbel", ""),
        ("G-Rerank / PDist (cold)", "gumbel", "pdist-cold", "target <= 1.5"),
        ("G-Rerank / supervised floor", "gumbel", "supervised", ""),
        ("G-Rerank with bf16 docs / supervised floor", "gumbel-bf16docs", "supervised", "what bounds it"),
        ("supervised floor, bf16 reranker / fp32", "supervised-rbf16", "supervised", ""),
        ("G-Rerank, bf16 reranker / fp32", "gumbel-rbf16", "gumbel", ""),
        ("G-Rerank fast (bf16 reranker + docs) / its floor (bf16 reranker)", "gumbel-fast", "supervised-rbf16", "target <= 2.0"),
        ("G-Rerank cached / its floor (fp32)", "gumbel-cached", "supervised", "target <= 1.3"),
        ("G-Rerank, docs in length buckets / one padded batch (fp32)", "gumbel", "gumbel-padded", ""),
        ("G-Rerank fast, length buckets / one padded batch", "gumbel-fast", "gumbel-fastpadded", ""),
        ("G-Rerank fast, grouped answer kernel / sdpa", "gumbel-fast", "gumbel-fastsdpa", "readers/attention.py"),
        ("supervised floor, dropout on / off (bf16)", "supervised-dropout", "supervised-rbf16", "what train.dropout costs"),
        ("supervised floor with dropout, length groups / one padded batch", "supervised-dropout", "supervised-dropoutpadded", ""),
        ("G-Rerank default / its floor (dropout on, as the loop)", "gumbel-default", "supervised-dropout", "target <= 2.0"),
        ("G-Rerank default / as before length groups and the grouped kernel", "gumbel-default", "gumbel-defaultbefore", ""),
        ("G-Rerank default, docs cached / its floor (dropout on)", "gumbel-defaultcached", "supervised-dropout", "target <= 1.3"),
    ]
    return [f"{label} = {s[a] / s[b]:.2f}" + (f" ({note})" if note else "") for label, a, b, note in want if a in s and b in s]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", help=argparse.SUPPRESS)  # one measurement, in a child process
    p.add_argument("--docs", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--variants", default=",".join(VARIANTS), help="a comma-separated subset of the variants at N=10")
    p.add_argument("--sizes", default=None, help="G-Rerank at these N too (default 5,20,50; --quick 5,20)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_step.json"))
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_one(args.variant, args.docs, args.steps)))
        return
    if args.quick:
        args.rounds, args.steps = 1, 2
    chosen = [v for v in args.variants.split(",") if v]
    unknown = set(chosen) - set(VARIANTS)
    if unknown or "gumbel" not in chosen:
        raise SystemExit(f"--variants must include gumbel and name only {', '.join(VARIANTS)} (unknown: {sorted(unknown)})")
    sizes = args.sizes if args.sizes is not None else ("5,20" if args.quick else "5,20,50")
    plan = [(v, 10) for v in chosen] + [("gumbel", int(n)) for n in sizes.split(",") if n]
    results: dict[str, list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for variant, n in plan if r % 2 == 0 else reversed(plan):
            key = f"{variant}@N={n}"
            cmd = [sys.executable, __file__, "--variant", variant, "--docs", str(n), "--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise SystemExit(f"{key} failed:\n{done.stderr[-2000:]}")
            results.setdefault(key, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  round {r + 1}: {key:<22} {results[key][-1]['seconds']:.2f} s/step", flush=True)
    summary = {
        k: {
            "seconds": median([x["seconds"] for x in v]),
            "prepare_seconds": median([x["prepare_seconds"] for x in v]),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in v),
            "loaded_rss_mb": median([x["loaded_rss_mb"] for x in v]),
            **(
                {"grad_cosine": min(x["grad_cosine"] for x in v), "grad_cosine_min": min(x["grad_cosine_min"] for x in v)}
                if "grad_cosine" in v[0]
                else {}
            ),
        }
        for k, v in results.items()
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    g = summary["gumbel@N=10"]["seconds"]
    print(
        "\nmedian s/step, one HotpotQA question with N=10 paragraphs; ratio = variant / G-Rerank (parallel); "
        "peak RSS per process (weights included)"
    )
    print(
        "| variant | s/step | ratio to G-Rerank | of which doc encoding s | peak RSS MB | over loaded MB "
        "| grad cosine bf16 vs fp32 (min) |"
    )
    print("|---|---|---|---|---|---|---|")
    for key in [f"{v}@N=10" for v in chosen]:
        row = summary[key]
        print(
            f"| {key.split('@')[0]} | {row['seconds']:.2f} | {row['seconds'] / g:.2f} | {row['prepare_seconds']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {row['peak_rss_mb'] - row['loaded_rss_mb']:.0f} | "
            + (f"{row['grad_cosine']:.4f} ({row['grad_cosine_min']:.4f}) |" if "grad_cosine" in row else " |")
        )
    print()
    for line in ratios({k.split("@")[0]: v["seconds"] for k, v in summary.items() if k.endswith("@N=10")}):
        print(line)
    ns = sorted(int(k.split("=")[1]) for k in summary if k.startswith("gumbel@"))
    print("\nG-Rerank step time against N (linear means s/step / N roughly constant):")
    for n in ns:
        s = summary[f"gumbel@N={n}"]["seconds"]
        print(
            f"  N={n:<3} {s:6.2f} s/step   {s / n * 1000:6.1f} ms per doc   peak RSS "
            f"{summary[f'gumbel@N={n}']['peak_rss_mb']:.0f} MB"
        )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
