"""ADist, attention distillation (Izacard & Grave, 2021).

Teacher: the attention mass each doc's tokens receive from the answer positions when the reader
reads all docs, computed once without gradient and cached. Two aggregations
(``adist_aggregation``): ``scores``, FiD's mean pre-softmax score of the first decoded token over
heads, layers and the doc's tokens; ``value_norm``, Atlas's attention probability times value-
vector norm, summed over heads, layers, answer tokens and doc tokens. Target:
softmax(teacher / temperature_gold); loss KL(target || P_R), P_R = softmax(w / temperature_score).

Readers: fid (decoder cross-attention) and both decoder-only layouts (the answer positions'
self-attention to doc tokens). Cost: one reader pass per question with the eager attention kernel.
Relation: attention is a proxy for usefulness; it rewards docs the reader looks at, which need not
be the ones that change its answer.
"""

from __future__ import annotations

import torch

from ..config import ObjectiveConfig
from ..readers.base import ADIST_AGGREGATIONS, Reader
from .base import Batch, LossOutput, kl_to_student, student_log_probs
from .teachers import TeacherCache, TeacherObjective, pad_doc_scores


class ADistObjective(TeacherObjective):
    def __init__(self, cfg: ObjectiveConfig, teachers: TeacherCache | None = None) -> None:
        if cfg.adist_aggregation not in ADIST_AGGREGATIONS:
            raise ValueError(f"objective.adist_aggregation must be one of {ADIST_AGGREGATIONS}")
        super().__init__(cfg, teachers)

    def teacher(self, batch: Batch, reader: Reader) -> torch.Tensor:
        agg = self.cfg.adist_aggregation

        def compute(b: Batch) -> list[torch.Tensor]:
            scores = reader.doc_attention(b.context(reader), agg)
            return [scores[i, : len(ex.docs)] for i, ex in enumerate(b.examples)]

        return pad_doc_scores(self.teachers.get(reader, f"attention_{agg}", batch, compute), batch.valid.shape[1])

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        student = student_log_probs(doc_scores, batch.valid, self.cfg.temperature_score)
        loss = kl_to_student(self.teacher(batch, reader), student, batch.valid, self.cfg.temperature_gold)
        return LossOutput(loss, {"loss": loss.item()})
