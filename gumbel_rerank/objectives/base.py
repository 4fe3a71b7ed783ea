"""What every objective receives and returns. The loop never branches on an objective's name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from ..data.schema import Example, doc_valid
from ..readers.base import Reader


@dataclass
class Batch:
    """B questions, their (B, N) valid-doc mask, and the reader's prepared context (built on demand)."""

    examples: list[Example]
    progress: float = 0.0  # share of training done, in [0, 1] (for schedules such as tau annealing)
    noise_seeds: list[int] | None = None  # one per question: its noise is the same whichever process holds it
    device: torch.device | str = "cpu"  # the reranker's (and the reader's) device
    valid: torch.Tensor = field(init=False)
    _context: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.valid = doc_valid(self.examples, self.device)

    def question_generators(self, generator: torch.Generator) -> list[torch.Generator]:
        """One generator per question, from ``noise_seeds`` or else drawn from ``generator``."""
        seeds = self.noise_seeds
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(self.examples),), generator=generator).tolist()
        return [torch.Generator().manual_seed(int(s)) for s in seeds]

    def context(self, reader: Reader) -> Any:
        """Tokenised batch with doc encodings, computed once per batch and shared by all reader calls."""
        if self._context is None:
            self._context = reader.prepare(self.examples)
        return self._context


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable in the reranker's parameters
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput: ...


class ObjectiveBase:
    """What the registry, the CLI, the sweep and the config checks read from an objective's class.

    ``name`` is its ``objective.name`` and key in ``OBJECTIVES``; ``title`` its name in tables;
    ``reads`` the ``objective.*`` keys it reads (a contract test holds it to them);
    :meth:`check_data` the data it needs, checked before any model loads.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any, teachers: Any = None) -> None:
        self.cfg = cfg

    @classmethod
    def check_data(cls, cfg: Any, examples: Sequence[Example]) -> None:
        """Raise ``ValueError`` (with the fix) when ``examples`` cannot train this objective."""

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        raise NotImplementedError


def answer_nll(reader: Reader, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
    """(B, M) token-mean NLL of the gold answer under (B, M, N) doc weights."""
    return -reader.answer_logprob(batch.context(reader), weights).mean()


def masked_log_softmax(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log softmax over the valid entries of the last dim; 0 (never -inf) at invalid ones."""
    out = torch.log_softmax(logits.masked_fill(~valid, -torch.inf), dim=-1)
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype))


def student_log_probs(doc_scores: torch.Tensor, valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """log P_R(d_i | q) = log softmax(w_i / temperature_score) over the question's docs."""
    return masked_log_softmax(doc_scores / temperature, valid)


def kl_to_student(
    teacher_logits: torch.Tensor, student_logp: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over questions of KL(softmax(teacher / temperature_gold) || P_R), entirely in log space."""
    teacher_logp = masked_log_softmax(teacher_logits.detach().to(student_logp.dtype) / temperature, valid)
    return kl_divergence(teacher_logp, student_logp, valid)


def kl_divergence(p_logp: torch.Tensor, q_logp: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over questions of KL(p || q) from log-probabilities over each question's valid docs.

    This is PyTorch's ``reduction="batchmean"``, the mathematically correct KL per question; Atlas's
    ``nn.KLDivLoss()`` (reduction "mean") divides by B x N instead.
    """
    kl = torch.where(valid, p_logp.exp() * (p_logp - q_logp), torch.zeros((), dtype=q_logp.dtype))
    return kl.sum(-1).mean()
