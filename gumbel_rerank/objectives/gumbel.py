"""G-Rerank: train the reranker through a Gumbel relaxed top-k mask inside the frozen reader.

Optimises the reader's token-level NLL of the gold answer given all N docs under the soft mask
M = relaxed_topk(kappa * w' + Gumbel noise, k, tau), applied by Differentiable Masked Attention
(Huang et al., ACL 2025, arXiv 2502.11116). The gradient reaches the reranker's scores w only
through M; the reader is frozen.

The calibrated mask (the default). The paper's construction, k Gumbel-softmax draws combined by
element-wise max (``relaxation: l2x``) over ``kappa * w`` (``calibration: none``), depends on the
reranker's score scale: a bi-encoder's cosine / 0.05 spans about +-12 against Gumbel noise of
standard deviation 1.28, so every draw picks the same one or two docs and a "top-5" mask held
1.3-2.5 docs on HotpotQA; docs outside the top two then get almost no gradient. Even with scores
on a unit scale the max of k draws holds only about 0.65 k docs (draws repeat). So by default:

* ``calibration: standardize``: each question's scores are z-scored over its docs before the
  Gumbel step (:func:`~gumbel_rerank.topk.standardize`), so kappa is in units of the scores' own
  spread whatever the reranker (bi-encoder, fresh cross-encoder head, anything between), and the
  reranker cannot switch exploration off by inflating its scale;
* ``relaxation: threshold``: one Gumbel draw, then the entropy-regularised projection onto
  "k docs" (:func:`~gumbel_rerank.topk.threshold_topk`): entries in [0, 1], each row sums to
  exactly k, and as tau -> 0 it is the hard top-k of the perturbed scores, so training sees k
  docs as inference does. ``bench/mask_calibration.py`` measures every combination.

``calibration: none`` with ``relaxation: l2x`` is the old fixed-kappa behaviour (kept for the
ablation). The same :meth:`GumbelObjective.mask` serves training and every report.

Telemetry (logged every step): ``mask_sum`` (sum of M), ``mask_distinct`` (distinct docs picked by
the draws' argmax: the union of the k argmaxes for l2x, the hard top-k of the perturbed scores
otherwise), ``mask_overlap`` (share of the deterministic hard top-k that M keeps above 0.5). A
warning with the fix is logged once when ``mask_sum`` stays below k/2 for 10 consecutive calls.

Readers: any layout (fid, parallel, sequential). It is the only objective that backpropagates
through the reader, so it costs one forward and one backward pass over the question and answer
tokens per Gumbel sample (the docs are encoded once, without gradient, in fid and parallel).

Hyperparameters: k (docs kept, 2-5), tau (0.1-1; ``tau_final`` anneals it geometrically), kappa
(score spread against unit noise; 0.5-2 with standardize, small = explore), samples (Gumbel draws
per question, 1-4), relaxation (``threshold`` | ``l2x``: the paper's max of k draws | ``subset``:
successive softmax, whose entries can exceed 1), calibration (``standardize`` | ``none``),
straight_through (hard mask forward, the relaxed mask's gradient backward), k_draw (each question's
k drawn per step from 1..k, so the top 1 must already hold what the top k holds: an order inside the
top k, not only a set; costs nothing extra), antithetic (the samples come in pairs whose noise is
``-log(-log u)`` and ``-log(-log(1 - u))``: negatively correlated draws of the same cost; needs an even
``samples``), noise (False is the paper's "no Gumbel noise" ablation).

Relation to the others: EMDR2 and PDist score each doc alone; G-Rerank scores subsets jointly,
so a bridge doc that only helps together with another doc can still be rewarded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import ConfigError, ObjectiveConfig
from ..data.schema import Example
from ..readers.base import Reader
from ..topk import (
    RELAXATIONS,
    gumbel_noise,
    hard_topk,
    relaxed_topk_from_noise,
    standardize,
    straight_through,
    subset_topk_from_noise,
    threshold_topk_from_noise,
)
from .base import Batch, LossOutput, ObjectiveBase, answer_nll

log = logging.getLogger(__name__)
CALIBRATIONS = ("standardize", "none")
LOW_MASK_STEPS = 10  # consecutive calls with mask_sum < k/2 before the warning
_MISSING = -1e4  # calibrated score of an empty doc slot (no mass in any relaxation)


@dataclass
class MaskDraw:
    """One call's masks and what telemetry needs about them."""

    masks: torch.Tensor  # (B, S, N) doc weights, one row per Gumbel sample
    picks: torch.Tensor  # (B, S, N) True at the docs the draws' argmax picked


class GumbelObjective(ObjectiveBase):
    name = "gumbel"
    title = "G-Rerank"
    reads = (
        "k",
        "tau",
        "tau_final",
        "kappa",
        "calibration",
        "samples",
        "relaxation",
        "straight_through",
        "k_draw",
        "antithetic",
        "noise",
        "log_hard_loss",
    )

    @classmethod
    def check_data(cls, cfg: ObjectiveConfig, examples: Sequence[Example]) -> None:
        fewest = min(len(ex.docs) for ex in examples)
        if cfg.k > fewest:
            raise ConfigError(
                f"objective.k={cfg.k} is larger than the number of docs of some training question "
                f"({fewest}); lower objective.k to at most {fewest}"
            )

    def __init__(self, cfg: ObjectiveConfig, teachers: object = None) -> None:  # no teacher
        if cfg.relaxation not in RELAXATIONS:
            raise ValueError(f"objective.relaxation must be one of {sorted(RELAXATIONS)}")
        if cfg.calibration not in CALIBRATIONS:
            raise ValueError(f"objective.calibration must be one of {CALIBRATIONS}")
        if cfg.k_draw and (cfg.relaxation != "threshold" or cfg.straight_through):
            raise ConfigError("objective.k_draw needs objective.relaxation=threshold and straight_through off")
        if cfg.antithetic and cfg.samples % 2:
            raise ConfigError(
                f"objective.antithetic pairs the Gumbel samples: set objective.samples to an even number (got {cfg.samples})"
            )
        self.cfg = cfg
        self._low_calls = 0
        self._warned = False

    def tau(self, progress: float) -> float:
        """Geometric annealing from ``tau`` to ``tau_final`` (constant when tau_final is None)."""
        c = self.cfg
        return c.tau if c.tau_final is None else c.tau * (c.tau_final / c.tau) ** min(max(progress, 0.0), 1.0)

    def calibrated(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, N) the scores the Gumbel step sees: standardised per question, or as they are."""
        z = standardize(scores, valid) if self.cfg.calibration == "standardize" else scores
        return torch.where(valid, z, torch.full_like(z, _MISSING))

    def draw(
        self,
        scores: torch.Tensor,
        valid: torch.Tensor,
        tau: float,
        generators: list[torch.Generator],
        counts: list[int] | None = None,
    ) -> MaskDraw:
        """(B, S, N) masks, one per Gumbel sample, and the docs each sample's draws picked.

        Question b's noise comes from its own generator and covers its own docs only, so it does not
        depend on which other questions share the batch (or the process, in multi-process training).
        """
        c = self.cfg
        B, N = scores.shape
        draws = c.k if c.relaxation == "l2x" else 1
        noise = torch.zeros(c.samples, draws, B, N, dtype=scores.dtype)  # drawn on the CPU: the same on every device
        if c.noise:
            real = counts if counts is not None else valid.sum(-1).tolist()  # docs per question (the first slots)
            for b, gen in enumerate(generators):
                shape = (c.samples, draws, real[b])
                noise[:, :, b, : real[b]] = gumbel_noise(shape, generator=gen, dtype=scores.dtype, antithetic=c.antithetic)
        noise = noise.to(scores.device)
        # k_draw: each question's k for this step, from its own generator (after its noise)
        ks = [int(torch.randint(1, c.k + 1, (1,), generator=g)) for g in generators] if c.k_draw else []
        z = self.calibrated(scores, valid)
        masks, picks = [], []
        for s in range(c.samples):
            perturbed = c.kappa * z.detach().unsqueeze(0) + noise[s]  # (draws, B, N)
            if c.relaxation == "l2x":
                soft = relaxed_topk_from_noise(z, noise[s], tau=tau, kappa=c.kappa)
                picked = torch.nn.functional.one_hot(perturbed.argmax(-1), N).amax(0)  # union of the argmaxes
            elif c.relaxation == "subset":
                soft = subset_topk_from_noise(z, noise[s, 0], k=c.k, tau=tau, kappa=c.kappa)
                picked = hard_topk(perturbed[0], k=c.k)
            elif ks:
                rows = [slice(b, b + 1) for b in range(B)]
                soft = torch.cat(
                    [
                        threshold_topk_from_noise(z[r], noise[s, 0, r], k=kb, tau=tau, kappa=c.kappa, valid=valid[r])
                        for r, kb in zip(rows, ks, strict=True)
                    ]
                )
                picked = torch.cat([hard_topk(perturbed[0, r], k=kb) for r, kb in zip(rows, ks, strict=True)])
            else:
                soft = threshold_topk_from_noise(z, noise[s, 0], k=c.k, tau=tau, kappa=c.kappa, valid=valid)
                picked = hard_topk(perturbed[0], k=c.k)
            masks.append(straight_through(soft, k=c.k) if c.straight_through else soft)
            picks.append(picked.bool() & valid)
        return MaskDraw(torch.stack(masks, dim=1) * valid.unsqueeze(1), torch.stack(picks, dim=1))

    def mask(self, scores: torch.Tensor, valid: torch.Tensor, tau: float, generators: list[torch.Generator]) -> torch.Tensor:
        """(B, S, N) soft masks, one per Gumbel sample (see :meth:`draw`)."""
        return self.draw(scores, valid, tau, generators).masks

    def telemetry(self, drawn: MaskDraw, scores: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
        """mask_sum, mask_distinct and mask_overlap, averaged over questions and samples."""
        m = drawn.masks.detach()
        hard = (hard_topk(self.calibrated(scores.detach(), valid), k=self.cfg.k).bool() & valid).unsqueeze(1)
        kept = ((m > 0.5) & hard).sum(-1).float() / hard.sum(-1).clamp_min(1).float()
        out = {
            "mask_sum": m.sum(-1).mean().item(),
            "mask_distinct": drawn.picks.sum(-1).float().mean().item(),
            "mask_overlap": kept.mean().item(),
        }
        self._watch(out["mask_sum"])
        return out

    def _watch(self, mask_sum: float) -> None:
        expected = (self.cfg.k + 1) / 2 if self.cfg.k_draw else self.cfg.k  # k_draw: the mean of 1..k
        self._low_calls = self._low_calls + 1 if mask_sum < expected / 2 else 0
        if self._low_calls >= LOW_MASK_STEPS and not self._warned:
            self._warned = True
            log.warning(
                "the relaxed top-%d mask has held fewer than %.1f docs for %d consecutive steps (mask_sum %.2f): "
                "training optimises a smaller mask than the top-%d used at inference. Use "
                "objective.calibration=standardize with objective.relaxation=threshold (the defaults), or lower "
                "objective.kappa / raise objective.tau",
                self.cfg.k,
                self.cfg.k / 2,
                LOW_MASK_STEPS,
                mask_sum,
                self.cfg.k,
            )

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        valid = batch.valid
        smallest = min(len(ex.docs) for ex in batch.examples)
        if self.cfg.k > smallest:
            raise ValueError(
                f"objective.k={self.cfg.k} but a question in this batch has only {smallest} docs; "
                "lower objective.k or drop questions with fewer docs"
            )
        tau = self.tau(batch.progress)
        drawn = self.draw(doc_scores, valid, tau, batch.question_generators(generator), [len(ex.docs) for ex in batch.examples])
        nll = answer_nll(reader, batch, drawn.masks)  # (B, S)
        loss = nll.mean()
        metrics = {"loss": loss.item(), "tau": tau, **self.telemetry(drawn, doc_scores, valid)}
        if self.cfg.log_hard_loss:
            with torch.no_grad():
                hard = hard_topk(doc_scores.detach(), k=self.cfg.k).unsqueeze(1) * valid.unsqueeze(1)
                metrics["hard_loss"] = answer_nll(reader, batch, hard).mean().item()
        return LossOutput(loss, metrics)
