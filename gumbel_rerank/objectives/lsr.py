"""LSR, LM-supervised retrieval (Shi et al., REPLUG, 2023).

The same idea as PDist with REPLUG's conventions: the teacher uses the LM's likelihood itself,
Q(d_i) = softmax_i(p_LM(answer | question, doc i) / beta), and the loss is KL(P_R || Q), the
retrieval distribution first, as written in the paper. p_LM is the per-token geometric mean
exp(mean token log-prob): the raw sequence probability of a multi-token answer underflows and
would make Q uniform. beta is ``temperature_gold`` and the retriever's gamma is
``temperature_score``.

Readers: any layout; shares the one-doc teacher (and its cache) with PDist and EMDR.
Relation: like PDist it scores each doc alone; on probabilities instead of log-probabilities it
separates docs only where the reader is fairly confident.
"""

from __future__ import annotations

import torch

from ..readers.base import Reader
from .base import Batch, LossOutput, kl_divergence, masked_log_softmax, student_log_probs
from .teachers import TeacherObjective, one_doc_teacher


class LSRObjective(TeacherObjective):
    name = "lsr"
    title = "LSR (REPLUG)"
    reads = ("temperature_gold", "temperature_score")

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        likelihood = one_doc_teacher(self.teachers, reader, batch).mean().exp()  # (B, N) in (0, 1]
        valid = batch.valid
        lm_logp = masked_log_softmax(likelihood.to(doc_scores.dtype) / self.cfg.temperature_gold, valid)
        student = student_log_probs(doc_scores, valid, self.cfg.temperature_score)
        loss = kl_divergence(student, lm_logp, valid)  # REPLUG's direction: KL(P_R || Q)
        return LossOutput(loss, {"loss": loss.item()})
