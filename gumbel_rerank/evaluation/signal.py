"""How much signal is in one reranker gradient? Cosines between gradients that should agree.

For a fixed batch, G-Rerank's gradient depends on its Gumbel draw: the cosine between the reranker
gradients of two independent draws (``noise``) says how much of a step is signal. Every objective,
G-Rerank included, also varies from batch to batch: the cosine between the gradients of two
disjoint batches of the same size (``minibatch``) is the noise a rival's steps carry. A cosine
near 0 means that with AdamW (which moves every weight by about the learning rate whatever the
gradient's size) a step is close to a random direction. The reranker is put in eval mode (no
dropout) so that only the named source of noise varies.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..config import ObjectiveConfig
from ..data.schema import Example
from ..objectives import OBJECTIVES, Batch, TeacherCache
from ..readers.base import Reader
from ..rerankers import Reranker


def _gradient(reranker: Reranker, objective: Any, examples: Sequence[Example], reader: Reader, seed: int) -> torch.Tensor:
    reranker.zero_grad(set_to_none=True)
    batch = Batch(list(examples), noise_seeds=[seed * 1000 + i for i in range(len(examples))])
    objective(batch, reranker.score(batch.examples), reader, torch.Generator().manual_seed(seed)).loss.backward()
    grads = [p.grad.flatten() for p in reranker.parameters() if p.grad is not None]
    reranker.zero_grad(set_to_none=True)
    return torch.cat(grads) if grads else torch.zeros(1)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """In float64: over millions of parameters float32 accumulation is off by a few 1e-3."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def gradient_agreement(
    cfg: ObjectiveConfig,
    reranker: Reranker,
    reader: Reader,
    examples: Sequence[Example],
    *,
    batch_size: int,
    pairs: int = 2,
    teachers: TeacherCache | None = None,
) -> dict[str, Any]:
    """Mean (and sd) cosine of gradient pairs: same batch / other noise, and disjoint batches.

    Needs ``2 * pairs * batch_size`` examples. ``noise`` is 1.0 by construction for objectives
    without randomness (every rival).
    """
    need = 2 * pairs * batch_size
    if len(examples) < need:
        raise ValueError(f"gradient_agreement needs {need} questions for {pairs} pairs of batches of {batch_size}")
    objective = OBJECTIVES[cfg.name](cfg, teachers or TeacherCache())
    was_training = reranker.training
    reranker.eval()
    noise, minibatch = [], []
    try:
        for p in range(pairs):
            first = examples[2 * p * batch_size : (2 * p + 1) * batch_size]
            other = examples[(2 * p + 1) * batch_size : (2 * p + 2) * batch_size]
            g1 = _gradient(reranker, objective, first, reader, seed=2 * p + 1)
            g2 = _gradient(reranker, objective, first, reader, seed=2 * p + 2)
            g3 = _gradient(reranker, objective, other, reader, seed=2 * p + 3)
            noise.append(_cos(g1, g2))
            minibatch.append(_cos(g1, g3))
    finally:
        reranker.train(was_training)

    def summary(values: list[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    return {
        "objective": cfg.name,
        "samples": cfg.samples,
        "batch_size": batch_size,
        "pairs": pairs,
        "noise": summary(noise),
        "minibatch": summary(minibatch),
    }


def question_gradients(
    cfg: ObjectiveConfig,
    reranker: Reranker,
    reader: Reader,
    examples: Sequence[Example],
    *,
    teachers: TeacherCache | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, float]:
    """(P, D) the reranker's gradient of each question alone (its own noise seed), and the seconds per
    question. Every objective's loss is a mean over its batch's questions, so a batch's gradient is the
    mean of its questions' rows (``tests/test_signal.py`` checks it for each objective): any number of
    batches of any size can be formed from one pass."""
    from tqdm.auto import tqdm

    objective = OBJECTIVES[cfg.name](cfg, teachers or TeacherCache())
    was_training = reranker.training
    reranker.eval()
    rows = []
    t0 = time.perf_counter()
    try:
        for i, ex in enumerate(tqdm(examples, desc=cfg.name, disable=not progress, leave=False)):
            rows.append(_gradient(reranker, objective, [ex], reader, seed=i + 1))
    finally:
        reranker.train(was_training)
    return torch.stack(rows), (time.perf_counter() - t0) / max(len(examples), 1)


def batch_cosines(grads: torch.Tensor, batch_size: int, pairs: int, seed: int = 0) -> list[float]:
    """Cosines between the mean gradients of two disjoint random batches of ``batch_size`` questions,
    ``pairs`` times (the pairs may share questions with each other, never within a pair). Computed
    from the questions' Gram matrix: exact, and cheap whatever the gradient's size."""
    if 2 * batch_size > grads.shape[0]:
        raise ValueError(f"two disjoint batches of {batch_size} need {2 * batch_size} questions, got {grads.shape[0]}")
    gram = _gram(grads, grads)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(pairs):
        idx = torch.randperm(grads.shape[0], generator=gen)[: 2 * batch_size]
        a, b = torch.zeros(grads.shape[0], dtype=torch.float64), torch.zeros(grads.shape[0], dtype=torch.float64)
        a[idx[:batch_size]], b[idx[batch_size:]] = 1.0, 1.0
        out.append(_weighted_cos(a, b, gram, gram, gram))
    return out


def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.double() @ b.double().T


def _weighted_cos(wa: torch.Tensor, wb: torch.Tensor, gab: torch.Tensor, gaa: torch.Tensor, gbb: torch.Tensor) -> float:
    """cos(sum_i wa_i a_i, sum_j wb_j b_j) from the Gram matrices of the rows."""
    den = float((wa @ gaa @ wa) * (wb @ gbb @ wb)) ** 0.5
    return float(wa @ gab @ wb) / den if den > 0 else math.nan


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its 95% interval (normal approximation, 1.96 standard errors)."""
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else math.nan
    return mean, mean - half, mean + half


def agreement(
    grads: torch.Tensor, reference: torch.Tensor, *, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Cosine of the two objectives' expected gradients (means over the same questions), with a 95%
    bootstrap interval over questions: does the signal point toward the reference (the labels) at all?"""
    gaa, gbb, gab = _gram(grads, grads), _gram(reference, reference), _gram(grads, reference)
    n = grads.shape[0]
    ones = torch.ones(n, dtype=torch.float64)
    point = _weighted_cos(ones, ones, gab, gaa, gbb)
    gen = torch.Generator().manual_seed(seed)
    boot = []
    for _ in range(resamples):
        w = torch.bincount(torch.randint(0, n, (n,), generator=gen), minlength=n).double()
        boot.append(_weighted_cos(w, w, gab, gaa, gbb))
    boot.sort()
    return point, boot[int(0.025 * resamples)], boot[int(0.975 * resamples) - 1]
