"""Stabilisers that keep a noisy reader gradient from walking the reranker away from its start.

The same for every objective, so a comparison stays fair:

* :class:`StartAnchor` (``objective.kl_to_start``): a trust region, ``lambda * KL(P_start || P_now)``
  per question, where ``P = softmax(scores / temperature_score)`` over the question's docs and
  ``P_start`` comes from a frozen copy of the reranker as training started;
* :func:`restrict_trainable` (``train.train_layers``): only the top N encoder layers (and the
  pooler / scoring head) learn; the embeddings and lower layers keep their pretrained weights.
"""

from __future__ import annotations

import copy
import re

import torch

from ..objectives.base import kl_divergence, student_log_probs
from ..rerankers import Reranker


class StartAnchor:
    """``weight * KL(P_start || P_now)`` averaged over a batch's questions (the trust region)."""

    def __init__(self, reranker: Reranker, *, weight: float, temperature: float) -> None:
        self.start = copy.deepcopy(reranker).eval().requires_grad_(False)
        self.weight = weight
        self.temperature = temperature

    def __call__(self, examples: list, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            start = student_log_probs(self.start.score(examples), valid, self.temperature)
        now = student_log_probs(scores, valid, self.temperature)
        return self.weight * kl_divergence(start, now, valid)


_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def restrict_trainable(reranker: Reranker, top_layers: int) -> int:
    """Freeze every encoder parameter but the top ``top_layers`` layers, the pooler and the head.

    Returns the number of trainable parameters.
    """
    names = [n for n, _ in reranker.encoder.named_parameters()]
    indices = sorted({int(m.group(1)) for n in names if (m := _LAYER.search(n))})
    if not indices:
        raise ValueError("train.train_layers: the reranker's encoder has no numbered layers to choose from")
    if top_layers > len(indices):
        raise ValueError(f"train.train_layers={top_layers} but the encoder has {len(indices)} layers")
    keep = set(indices[-top_layers:])
    for name, param in reranker.encoder.named_parameters():
        m = _LAYER.search(name)
        in_top = m is not None and int(m.group(1)) in keep
        head = m is None and "embeddings" not in name  # pooler, classifier
        param.requires_grad_(in_top or head)
    return sum(p.numel() for p in reranker.parameters() if p.requires_grad)
