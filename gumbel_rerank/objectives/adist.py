"""ADist, attention distillation (Izacard & Grave, 2021).

Teacher: the attention mass each doc's tokens receive from the answer positions when the reader
reads all docs, computed once without gradient and cached. Two aggregations
(``adist_aggregation``): ``scores``, FiD's mean pre-softmax score of the first decoded token over
heads, layers and the doc's tokens; ``value_norm``, Atlas's attention probability times value-
vector norm (mean over heads, summed over layers, answer tokens and doc tokens, divided by 256 x
layers x answer tokens as Atlas does). Target: softmax(teacher / T); loss KL(target || P_R),
P_R = softmax(w / temperature_score).

Teacher temperature T (``adist_temperature``; null = the published one): 1 for ``scores``, as FiD's
attention distillation used it (Izacard & Grave 2021; at Atlas's 0.01 the mean log-score teacher
is one-hot, often on a distractor), and ``temperature_gold`` (Atlas: 0.01) for ``value_norm``.
Reduction: KL summed over a question's docs and averaged over questions ("batchmean"); Atlas's
``nn.KLDivLoss()`` averages over B x N entries instead, i.e. ours is N times larger, which with
AdamW changes nothing but the gradient-clipping threshold.

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
    name = "adist"
    title = "ADist"
    reads = ("adist_aggregation", "adist_temperature", "temperature_gold", "temperature_score")

    def __init__(self, cfg: ObjectiveConfig, teachers: TeacherCache | None = None) -> None:
        if cfg.adist_aggregation not in ADIST_AGGREGATIONS:
            raise ValueError(f"objective.adist_aggregation must be one of {ADIST_AGGREGATIONS}")
        super().__init__(cfg, teachers)

    def teacher(self, batch: Batch, reader: Reader) -> torch.Tensor:
        agg = self.cfg.adist_aggregation

        def compute(b: Batch) -> list[torch.Tensor]:
            scores = reader.doc_attention(b.context(reader), agg)
            return [scores[i, : len(ex.docs)] for i, ex in enumerate(b.examples)]

        return pad_doc_scores(
            self.teachers.get(reader, f"attention_{agg}", batch, compute), batch.valid.shape[1], batch.valid.device
        )

    @property
    def temperature(self) -> float:
        """The teacher's temperature: ``adist_temperature``, or the aggregation's published one."""
        if self.cfg.adist_temperature is not None:
            return self.cfg.adist_temperature
        return 1.0 if self.cfg.adist_aggregation == "scores" else self.cfg.temperature_gold

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        student = student_log_probs(doc_scores, batch.valid, self.cfg.temperature_score)
        loss = kl_to_student(self.teacher(batch, reader), student, batch.valid, self.temperature)
        return LossOutput(loss, {"loss": loss.item()})
