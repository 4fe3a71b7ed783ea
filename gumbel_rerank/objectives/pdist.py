"""PDist, perplexity distillation (Izacard et al., Atlas, 2022).

Teacher: g_i = mean token log p_LM(answer | question, doc i alone), computed once without gradient
(cached, shared with LSR and EMDR). Target: softmax(g / temperature_gold). Loss: KL(target || P_R)
with P_R = softmax(w / temperature_score), both in log space.

Reduction: KL summed over a question's docs, averaged over questions ("batchmean"); Atlas's
``nn.KLDivLoss()`` averages over B x N entries, N times smaller (only the clipping threshold differs).

Readers: any layout (one weight view per doc). Cost: n one-doc reader passes per question, no
backward pass through the reader; cached teachers make later epochs reranker-only.
Hyperparameters: temperature_gold and temperature_score (Atlas defaults 0.01).
Relation: scores each doc alone, so a bridge doc that never contains the answer gets little mass.
"""

from __future__ import annotations

import torch

from ..readers.base import Reader
from .base import Batch, LossOutput, kl_to_student, student_log_probs
from .teachers import TeacherObjective, one_doc_teacher


class PDistObjective(TeacherObjective):
    name = "pdist"
    title = "PDist"
    reads = ("temperature_gold", "temperature_score")

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        teacher = one_doc_teacher(self.teachers, reader, batch).mean()  # (B, N)
        student = student_log_probs(doc_scores, batch.valid, self.cfg.temperature_score)
        loss = kl_to_student(teacher, student, batch.valid, self.cfg.temperature_gold)
        return LossOutput(loss, {"loss": loss.item()})
