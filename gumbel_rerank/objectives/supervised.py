"""Supervised listwise reference: uses the gold labels the other objectives never see.

Optimises the cross-entropy between softmax(w / theta) over a question's docs and the uniform
distribution over its gold docs (a ListNet-style loss). It needs no reader; it is the labelled
upper reference that the label-free objectives are measured against. Hyperparameter: none beyond
the reranker's own scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import ConfigError, ObjectiveConfig
from ..data.schema import Example
from ..readers.base import Reader
from ..rerankers import MISSING
from .base import Batch, LossOutput, ObjectiveBase


class SupervisedObjective(ObjectiveBase):
    name = "supervised"
    title = "supervised (uses labels)"
    reads = ()

    @classmethod
    def check_data(cls, cfg: ObjectiveConfig, examples: Sequence[Example]) -> None:
        missing = sum(not any(d.is_gold for d in ex.docs) for ex in examples)
        if missing:
            raise ConfigError(
                f"the supervised objective needs a gold doc in every training question; {missing} of "
                f"{len(examples)} have none (it is the labelled reference: use a labelled data file)"
            )

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        gold = torch.zeros_like(doc_scores)
        for b, ex in enumerate(batch.examples):
            for n, d in enumerate(ex.docs):
                gold[b, n] = float(d.is_gold)
        if bool((gold.sum(-1) == 0).any()):
            raise ValueError("the supervised objective needs at least one gold doc per question")
        target = gold / gold.sum(-1, keepdim=True)
        logp = torch.log_softmax(doc_scores.masked_fill(~batch.valid, MISSING), dim=-1)
        loss = -(target * logp).sum(-1).mean()
        return LossOutput(loss, {"loss": loss.item()})
