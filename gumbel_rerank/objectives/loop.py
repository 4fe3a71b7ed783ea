"""LOOP, leave-one-out perplexity distillation (Izacard et al., Atlas, 2022).

Teacher: l_i = mean token NLL of the answer given all docs except doc i (the more the loss rises
without doc i, the more it matters), computed once without gradient and cached. Target:
softmax(l / temperature_gold). Loss: KL(target || P_R), P_R = softmax(w / temperature_score).

Reduction: KL summed over a question's docs, averaged over questions ("batchmean"); Atlas's
``nn.KLDivLoss()`` averages over B x N entries, N times smaller (only the clipping threshold differs).

Readers: any layout. A weight of zero removes the doc exactly in fid and parallel; in sequential
the remaining docs keep their positions. Cost: n reader passes over n-1 docs per question.
Relation: the only rival that sees docs together, but one at a time: a bridge doc whose partner is
still present when it is left out looks less important than it is when the answer doc is missing.
"""

from __future__ import annotations

import torch

from ..readers.base import Reader
from .base import Batch, LossOutput, kl_to_student, student_log_probs
from .teachers import TeacherObjective, leave_one_out_logprobs, pad_token_logprobs


class LOOPObjective(TeacherObjective):
    name = "loop"
    title = "LOOP"
    reads = ("temperature_gold", "temperature_score")

    def teacher(self, batch: Batch, reader: Reader) -> torch.Tensor:
        """(B, N) answer NLL with each doc left out."""
        values = self.teachers.get(reader, "leave_one_out", batch, lambda b: leave_one_out_logprobs(reader, b))
        return -pad_token_logprobs(values, batch.valid.shape[1], batch.valid.device).mean()

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        student = student_log_probs(doc_scores, batch.valid, self.cfg.temperature_score)
        loss = kl_to_student(self.teacher(batch, reader), student, batch.valid, self.cfg.temperature_gold)
        return LossOutput(loss, {"loss": loss.item()})
