"""Shared by the benchmarks: real HotpotQA candidates from ../shared/data, real models, timing."""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOTPOT = (
    Path(os.environ.get("GUMBEL_RERANK_DATA", ROOT.parent / "shared" / "data"))
    / "hotpotqa"
    / "hotpot_dev_distractor_500_ircot.jsonl"
)
sys.path.insert(0, str(ROOT))
DOC_CACHE_MB = 8192  # a reader doc cache that holds every question a bench encodes


def default_reader(model, tokenizer, doc_cache_mb: int = 0):  # type: ignore[no-untyped-def]
    """The parallel reader as ``gumbel-rerank train`` builds it by default on this machine
    (``reader.doc_dtype: auto``), paragraphs of up to 160 tokens."""
    from gumbel_rerank import devices
    from gumbel_rerank.readers import make_reader

    docs = devices.doc_dtype("auto", model.dtype, model.device)
    return make_reader("parallel", model, tokenizer, max_doc_tokens=160, doc_dtype=docs, doc_cache_mb=doc_cache_mb)


def hotpot_questions(count: int, num_docs: int = 10):  # type: ignore[no-untyped-def]
    """``count`` real HotpotQA questions with exactly ``num_docs`` candidates: their own 10 paragraphs,
    cut or padded with paragraphs of later questions (distractors from elsewhere in the set)."""
    from gumbel_rerank.data.formats import read_examples

    if not HOTPOT.exists():
        raise SystemExit(f"{HOTPOT} not found; set GUMBEL_RERANK_DATA to the folder holding hotpotqa/")
    pool = [ex for ex in read_examples(HOTPOT) if len(ex.docs) >= 10]
    spare = [d for ex in pool[count:] for d in ex.docs if not d.is_gold]
    out = []
    for i, ex in enumerate(pool[:count]):
        docs = list(ex.docs[:num_docs])
        extra = spare[i * 50 :]
        while len(docs) < num_docs:
            d = extra[len(docs) - len(ex.docs)]
            docs.append(dataclasses.replace(d, id=f"x{len(docs)}-{d.id}"))
        out.append(dataclasses.replace(ex, docs=tuple(docs)))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, int(-(-len(ys) * q // 100)) - 1))]  # nearest rank
