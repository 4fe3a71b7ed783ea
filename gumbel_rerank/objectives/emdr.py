"""EMDR2, end-to-end training of multi-document reader and retriever (Sachan et al., 2021).

Docs are latent variables: L = -log sum_i P_R(d_i | q) p_LM(answer | q, d_i), with p_LM computed
per doc alone and held constant (cached, shared with PDist and LSR), P_R = softmax(w /
temperature_score). ``emdr_per_token`` marginalises per answer token as Atlas does:
L = -sum_t log sum_i P_R(d_i | q) p_LM(a_t | q, d_i, a_<t). Both are computed with logsumexp.

Temperatures: ``temperature_score`` as in Atlas. Atlas's per-token EMDR also divides the reader's
token logits by ``temperature_gold`` before its log-softmax over the vocabulary; we do not, for two
reasons: the teacher cache keeps only the gold tokens' log-probabilities (renormalising at another
temperature needs the whole vocabulary's logits, 49k-262k floats per token, doc and question), and
at Atlas's default of 0.01 the "probability" of a gold token becomes an indicator of it being the
argmax, which is no longer the likelihood that EMDR2 (Sachan et al. 2021) marginalises. Reduction:
Atlas averages the per-token loss over all answer tokens of the batch; we sum over a question's
tokens (a sequence log-likelihood) and average over questions.

Readers: any layout. Cost: n one-doc passes per question (the reader is not trained here).
Relation: like PDist it scores docs alone; its gradient pushes P_R towards the posterior
P(d_i | q, a), which concentrates on the doc that best explains the answer on its own.
"""

from __future__ import annotations

import torch

from ..readers.base import Reader
from .base import Batch, LossOutput, student_log_probs
from .teachers import TeacherObjective, one_doc_teacher


class EMDRObjective(TeacherObjective):
    name = "emdr"
    title = "EMDR2"
    reads = ("temperature_score", "emdr_per_token")

    def __call__(self, batch: Batch, doc_scores: torch.Tensor, reader: Reader, generator: torch.Generator) -> LossOutput:
        teacher = one_doc_teacher(self.teachers, reader, batch)  # (B, N, T) log-probs, (B, T) mask
        token_lp, mask = teacher.token_logprobs.to(doc_scores.dtype), teacher.token_mask
        valid = batch.valid
        prior = student_log_probs(doc_scores, valid, self.cfg.temperature_score)  # (B, N)
        blocked = torch.full((), -torch.inf, dtype=prior.dtype)
        if self.cfg.emdr_per_token:
            joint = torch.where(valid.unsqueeze(-1), prior.unsqueeze(-1) + token_lp, blocked)  # (B, N, T)
            per_token = torch.logsumexp(joint, dim=1)  # (B, T)
            nll = -(per_token * mask).sum(-1)
        else:
            seq = teacher.total().to(doc_scores.dtype)  # (B, N) log p(answer | q, d_i)
            nll = -torch.logsumexp(torch.where(valid, prior + seq, blocked), dim=-1)
        loss = nll.mean()
        return LossOutput(loss, {"loss": loss.item()})
