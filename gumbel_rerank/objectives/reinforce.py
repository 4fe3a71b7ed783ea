"""Subset REINFORCE: the score-function estimator of the same objective G-Rerank relaxes.

Objective: E_S[ answer NLL given the hard k-subset S ], S drawn from the reranker's Plackett-Luce
distribution over its calibrated scores theta = kappa * standardize(w) (``calibration: none`` uses w
as is). A draw is Gumbel-top-k (Zamani & Bendersky, "Stochastic RAG", SIGIR 2024): perturb theta with
Gumbel noise and keep the k largest, which samples k docs without replacement in the order
Plackett-Luce would; its log-probability is

    log P(i_1 .. i_k) = sum_j [ theta_{i_j} - logsumexp(theta over the docs not yet drawn) ].

The reader reads exactly what inference reads: k docs, hard. Its NLL f(S) is a reward only: it runs
forward, never backward. The gradient estimate is

    g = mean over samples s of (f(S_s) - b_s) * grad log P(S_s),

unbiased for grad E[f(S)] for any b_s independent of S_s (f depends on the set only, and summing the
ordered draws' probabilities over orders gives the set's). The baseline (``objective.baseline``):

- ``loo`` (default): with ``objective.samples`` S > 1, each sample's baseline is the mean reward of
  the other S - 1 (Kool, van Hoof & Welling, "Buy 4 REINFORCE samples, get a baseline for free!",
  ICLR 2019 workshop); with S = 1, the reward of the reranker's own deterministic top k (a greedy,
  self-critical baseline, as RRPO's reference; one extra reader forward);
- ``none``: b = 0 (for the variance test; never better).

Variance: Var[g] shrinks as 1/S, and the baseline removes the reward's common part, which for an
answer NLL of 2-3 nats is most of it; what remains is how much better or worse this subset reads
than the others. Cost per question: S reader forwards over the question and answer tokens (plus one
for the greedy baseline when S = 1), no reader backward, and the reranker's own forward and
backward. In the fid and parallel layouts the docs are encoded once per batch and each subset is a
view over that encoding; in the sequential layout each subset re-reads its whole prompt, S full
forward passes (still no backward).

Relation to G-Rerank: both optimise the reader's loss on the *set* of k docs. G-Rerank follows the
pathwise gradient of a relaxed, soft mask through the reader (low variance, biased: training reads
fractional docs that inference never sees); this estimator is unbiased for the hard subsets
inference uses and needs no gradient through the reader, at the price of variance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import ConfigError, ObjectiveConfig
from ..data.schema import Example
from ..readers.base import Reader
from ..topk import gumbel_noise, hard_topk, standardize
from .base import Batch, LossOutput, ObjectiveBase, answer_nll

BASELINES = ("loo", "none")


class ReinforceObjective(ObjectiveBase):
    name = "reinforce"
    title = "Subset REINFORCE"
    reads = ("k", "kappa", "calibration", "samples", "baseline", "log_hard_loss")

    @classmethod
    def check_data(cls, cfg: ObjectiveConfig, examples: Sequence[Example]) -> None:
        fewest = min(len(ex.docs) for ex in examples)
        if cfg.k > fewest:
            raise ConfigError(f"objective.k={cfg.k} is larger than the docs of some training question ({fewest}); lower it")

    def __init__(self, cfg: ObjectiveConfig, teachers: object = None) -> None:  # no teacher
        if cfg.baseline not in BASELINES:
            raise ValueError(f"objective.baseline must be one of {BASELINES}")
        self.cfg = cfg

    def logits(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, N) Plackett-Luce logits: kappa times the calibrated scores; -inf at empty doc slots."""
        z = standardize(scores, valid) if self.cfg.calibration == "standardize" else scores
        return torch.where(valid, self.cfg.kappa * z, torch.full_like(z, -torch.inf))

    def draw(self, logits: torch.Tensor, generators: list[torch.Generator], counts: list[int]) -> torch.Tensor:
        """(B, S, k) ordered draws without replacement (Gumbel-top-k), each question from its own
        generator over its own docs, so a draw does not depend on the batch it is in."""
        B, _ = logits.shape
        orders = torch.zeros(B, self.cfg.samples, self.cfg.k, dtype=torch.long)
        for b, gen in enumerate(generators):
            g = gumbel_noise((self.cfg.samples, counts[b]), generator=gen, dtype=logits.dtype)
            perturbed = logits[b, : counts[b]].detach().cpu() + g
            orders[b] = torch.sort(perturbed, dim=-1, descending=True, stable=True).indices[:, : self.cfg.k]
        return orders.to(logits.device)

    @staticmethod
    def log_prob(logits: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """(B, S) Plackett-Luce log-probability of each ordered draw; differentiable in ``logits``."""
        B, S, k = orders.shape
        theta = logits.unsqueeze(1).expand(B, S, logits.shape[-1])
        taken = torch.zeros_like(theta, dtype=torch.bool)
        out = torch.zeros(B, S, dtype=logits.dtype, device=logits.device)
        for j in range(k):
            pick = orders[:, :, j : j + 1]
            remaining = theta.masked_fill(taken, -torch.inf)
            out = out + theta.gather(-1, pick).squeeze(-1) - torch.logsumexp(remaining, dim=-1)
            taken = taken.scatter(-1, pick, True)
        return out

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        valid = batch.valid
        counts = [len(ex.docs) for ex in batch.examples]
        if self.cfg.k > min(counts):
            raise ValueError(f"objective.k={self.cfg.k} but a question in this batch has only {min(counts)} docs")
        theta = self.logits(doc_scores, valid)
        orders = self.draw(theta, batch.question_generators(generator), counts)
        masks = torch.zeros(*orders.shape[:2], valid.shape[-1], device=theta.device).scatter(-1, orders, 1.0)
        greedy = None
        with torch.no_grad():  # the reader only scores: no backward through it
            reward = answer_nll(reader, batch, masks)  # (B, S)
            S = reward.shape[1]
            if self.cfg.baseline == "none":
                base = torch.zeros_like(reward)
            elif S > 1:
                base = (reward.sum(1, keepdim=True) - reward) / (S - 1)  # leave-one-out
            else:
                greedy = hard_topk(theta.detach().masked_fill(~valid, -1e9), k=self.cfg.k) * valid
                base = answer_nll(reader, batch, greedy.unsqueeze(1))
        advantage = reward - base
        loss = (advantage * self.log_prob(theta, orders)).mean()  # its gradient is the estimator
        metrics = {"loss": reward.mean().item(), "advantage_sd": advantage.std().item() if advantage.numel() > 1 else 0.0}
        if self.cfg.log_hard_loss:  # the reader's loss given the reranker's own top k (the greedy baseline's, if drawn)
            if greedy is None:
                with torch.no_grad():
                    greedy = hard_topk(theta.detach().masked_fill(~valid, -1e9), k=self.cfg.k) * valid
                    base = answer_nll(reader, batch, greedy.unsqueeze(1))
            metrics["hard_loss"] = base.mean().item()
        return LossOutput(loss, metrics)
