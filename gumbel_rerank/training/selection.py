"""Label-free model selection: keep the reranker under which the frozen reader answers best.

Every ``train.eval_every`` steps the reader's answer NLL per token is computed given only the
reranker's hard top-k docs on a validation split of training-side questions (``data.num_val``,
never trained on). That is what G-Rerank optimises and what a RAG user gains, and it needs no
relevance labels. With ``train.select: val_loss`` the best such checkpoint is kept (``best/``) and
restored at the end; ``train.patience`` stops training after that many evaluations without a new
best. Gold recall on the validation and held-out questions is logged beside it where labels
exist, only to report how well the label-free criterion picks (never to select).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.schema import Example
from ..evaluation.evaluate import retrieval_metrics, score_all, topk_answer_nll
from ..evaluation.metrics import mean
from ..readers.base import Reader
from ..rerankers import Reranker
from .checkpoint import load_weights, save_reranker

log = logging.getLogger(__name__)


@dataclass
class Selector:
    """Evaluates at a step, keeps the best reranker by validation loss, says when to stop."""

    run_dir: Path
    reader: Reader
    validation: list[Example]
    held_out: list[Example]
    k: int
    patience: int = 0
    batch_size: int = 8
    save: bool = True  # False on every process but the main one (all evaluate alike; one writes)
    points: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_step: int | None = None
    since_best: int = 0
    # the held-out scores at best_step (this sitting's points only): the final evaluation of the restored
    # reranker reads them instead of scoring the held-out questions again
    best_held_out_scores: list[list[float]] | None = None

    def __post_init__(self) -> None:
        private = getattr(self.reader, "validation_cache", None)
        if private is not None:  # the validation docs' own cache, which training docs streaming through cannot evict
            self.reader = copy.copy(self.reader)
            self.reader.doc_cache = private  # type: ignore[attr-defined]

    @torch.no_grad()
    def evaluate(self, step: int, reranker: Reranker, held_out_scores: list[list[float]] | None = None) -> dict[str, Any]:
        """Record one point: ``val_loss`` (label-free) and, for the report only, gold recall.
        ``held_out_scores``: the reranker's scores of the held-out questions where the caller has them."""
        scores = score_all(reranker, self.validation, batch_size=self.batch_size)
        loss = mean(topk_answer_nll(self.reader, self.validation, scores, k=self.k, batch_size=self.batch_size))
        point: dict[str, Any] = {"step": step, "val_loss": loss}
        ks = sorted({2, self.k})
        point.update(
            {
                f"val_{m}": v
                for m, v in retrieval_metrics(self.validation, scores, ks).items()
                if m.startswith(("R@", "FullSupport@"))
            }
        )
        if self.held_out:
            if held_out_scores is None:
                held_out_scores = score_all(reranker, self.held_out, batch_size=self.batch_size)
            held = retrieval_metrics(self.held_out, held_out_scores, ks)
            point.update({f"held_out_{m}": v for m, v in held.items() if m.startswith(("R@", "FullSupport@", "bridge_R@"))})
        self.points.append(point)
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            self.best_held_out_scores = held_out_scores
            self._save_best(reranker)
        else:
            self.since_best += 1
        return point

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run selects as an uninterrupted one."""
        return {
            "points": self.points,
            "best_loss": self.best_loss if self.best_step is not None else None,
            "best_step": self.best_step,
            "since_best": self.since_best,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        self.points = list(state.get("points") or [])
        self.best_step = state.get("best_step")
        self.best_loss = math.inf if state.get("best_loss") is None else float(state["best_loss"])
        self.since_best = int(state.get("since_best") or 0)

    def plot(self) -> Path | None:
        """``selection.png``: validation answer NLL and gold R@k against step (matplotlib, if installed)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        if not self.points or not self.save:
            return None
        steps = [p["step"] for p in self.points]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [p["val_loss"] for p in self.points], "o-", color="tab:red", label="validation answer NLL")
        ax.set(xlabel="step", ylabel="answer NLL per token, top-k docs (label-free)")
        if self.best_step is not None:
            ax.axvline(self.best_step, color="grey", ls=":", label=f"selected (step {self.best_step})")
        right = ax.twinx()
        for key, style in ((f"held_out_R@{self.k}", "s-"), (f"val_R@{self.k}", "^--")):
            if any(key in p for p in self.points):
                right.plot(steps, [p.get(key, math.nan) for p in self.points], style, label=f"{key} (labels, report only)")
        right.set(ylabel="gold recall")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="best")
        fig.tight_layout()
        out = self.run_dir / "selection.png"
        fig.savefig(out, dpi=120)
        plt.close(fig)
        return out

    def _save_best(self, reranker: Reranker) -> None:
        """``best/`` replaced atomically: a crash leaves the previous best intact."""
        if self.save:
            save_reranker(
                reranker,
                self.run_dir / "best",
                {"selection.json": json.dumps({"step": self.best_step, "val_loss": self.best_loss})},
            )

    def restore_best(self, reranker: Reranker) -> None:
        if self.best_step is None:
            return
        load_weights(self.run_dir / "best", reranker)
        log.info("restored the reranker of step %d (validation answer NLL %.4f)", self.best_step, self.best_loss)

    def summary(self, metric: str = "held_out_R@5") -> dict[str, Any]:
        """How well the label-free criterion picked: Spearman of -val_loss with ``metric`` over the
        evaluated checkpoints, and ``metric`` at its pick against the best checkpoint's."""
        pts = [p for p in self.points if isinstance(p.get(metric), float) and not math.isnan(p[metric])]
        out: dict[str, Any] = {"selected_step": self.best_step, "selected_val_loss": self.best_loss, "points": len(self.points)}
        if len(pts) >= 2:
            from scipy.stats import spearmanr

            rho = spearmanr([-p["val_loss"] for p in pts], [p[metric] for p in pts]).statistic
            out[f"spearman_neg_val_loss_vs_{metric}"] = None if math.isnan(rho) else float(rho)
        if pts:
            picked = next((p for p in pts if p["step"] == self.best_step), None)
            out[f"{metric}_at_selected"] = picked[metric] if picked else None
            out[f"{metric}_best_checkpoint"] = max(p[metric] for p in pts)
        return out
