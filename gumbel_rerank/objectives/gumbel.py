"""G-Rerank: train the reranker through a Gumbel relaxed top-k mask inside the frozen reader.

Optimises the reader's token-level NLL of the gold answer given all N docs under the soft mask
M = relaxed_topk(kappa * w + Gumbel noise, k, tau), applied by Differentiable Masked Attention
(Huang et al., ACL 2025, arXiv 2502.11116). The gradient reaches the reranker's scores w only
through M; the reader is frozen.

Readers: any layout (fid, parallel, sequential). It is the only objective that backpropagates
through the reader, so it costs one forward and one backward pass over the question and answer
tokens per Gumbel sample (the docs are encoded once, without gradient, in fid and parallel).

Hyperparameters: k (docs kept, 2-5), tau (0.1-1; ``tau_final`` anneals it geometrically), kappa
(score scale against unit noise, 0.5-5; small = explore), samples (Gumbel draws per question,
1-4), relaxation (``l2x``: the paper's max of k draws; ``subset``: without replacement),
straight_through (hard mask forward, relaxed gradient backward), noise (False is the paper's
"no Gumbel noise" ablation, where the k draws coincide and M = softmax(kappa * w / tau)).

Relation to the others: EMDR2 and PDist score each doc alone; G-Rerank scores subsets jointly,
so a bridge doc that only helps together with another doc can still be rewarded.
"""

from __future__ import annotations

import torch

from ..config import ObjectiveConfig
from ..readers.base import Reader
from ..topk import (
    RELAXATIONS,
    gumbel_noise,
    hard_topk,
    relaxed_topk_from_noise,
    straight_through,
    subset_topk_from_noise,
)
from .base import Batch, LossOutput, answer_nll


class GumbelObjective:
    def __init__(self, cfg: ObjectiveConfig, teachers: object = None) -> None:  # no teacher
        if cfg.relaxation not in RELAXATIONS:
            raise ValueError(f"objective.relaxation must be one of {sorted(RELAXATIONS)}")
        self.cfg = cfg

    def tau(self, progress: float) -> float:
        """Geometric annealing from ``tau`` to ``tau_final`` (constant when tau_final is None)."""
        c = self.cfg
        return c.tau if c.tau_final is None else c.tau * (c.tau_final / c.tau) ** min(max(progress, 0.0), 1.0)

    def mask(self, scores: torch.Tensor, valid: torch.Tensor, tau: float, generators: list[torch.Generator]) -> torch.Tensor:
        """(B, S, N) soft masks, one per Gumbel sample.

        Question b's noise comes from its own generator and covers its own docs only, so it does not
        depend on which other questions share the batch (or the process, in multi-process training).
        """
        c = self.cfg
        B, N = scores.shape
        draws = c.k if c.relaxation == "l2x" else 1
        noise = torch.zeros(c.samples, draws, B, N, dtype=scores.dtype)
        if c.noise:
            real = valid.sum(-1).tolist()  # docs of each question (they fill the first slots)
            for b, gen in enumerate(generators):
                noise[:, :, b, : real[b]] = gumbel_noise((c.samples, draws, real[b]), generator=gen, dtype=scores.dtype)
        masks = []
        for s in range(c.samples):
            if c.relaxation == "l2x":
                soft = relaxed_topk_from_noise(scores, noise[s], tau=tau, kappa=c.kappa)
            else:
                soft = subset_topk_from_noise(scores, noise[s, 0], k=c.k, tau=tau, kappa=c.kappa)
            masks.append(straight_through(soft, k=c.k) if c.straight_through else soft)
        return torch.stack(masks, dim=1)

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        valid = batch.valid
        smallest = int(valid.sum(-1).min())
        if self.cfg.k > smallest:
            raise ValueError(
                f"objective.k={self.cfg.k} but a question in this batch has only {smallest} docs; "
                "lower objective.k or drop questions with fewer docs"
            )
        tau = self.tau(batch.progress)
        weights = self.mask(doc_scores, valid, tau, batch.question_generators(generator)) * valid.unsqueeze(1)  # (B, S, N)
        nll = answer_nll(reader, batch, weights)  # (B, S)
        loss = nll.mean()
        metrics = {"loss": loss.item(), "tau": tau, "mask_sum": weights.detach().sum(-1).mean().item()}
        if self.cfg.log_hard_loss:
            with torch.no_grad():
                hard = hard_topk(doc_scores.detach(), k=self.cfg.k).unsqueeze(1) * valid.unsqueeze(1)
                metrics["hard_loss"] = answer_nll(reader, batch, hard).mean().item()
        return LossOutput(loss, metrics)

