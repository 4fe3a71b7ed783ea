"""Fusion-in-Decoder reader (layout ``fid``) over any T5-family seq2seq model.

Each "question + doc" is encoded on its own, once per batch and without gradient; the decoder
cross-attends over all docs' tokens with the ``log w`` bias, passed as a 4-D float
``attention_mask`` next to ``encoder_outputs`` (both public arguments). Docs never see each other,
so a zero weight equals the doc removed, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutput

from ..data.schema import Example, num_docs
from ..masking import key_bias, log_weights
from .base import (
    AnswerScores,
    attention_per_doc,
    cache_of,
    check_weights,
    cut_at_eos,
    eager_attention,
    freeze,
    model_device,
    upcast,
)


@dataclass
class FiDContext:
    hidden: torch.Tensor  # (B, N*L, H) encoder states of every doc, concatenated
    key_doc: torch.Tensor  # (B, N*L) doc index of each encoder token
    key_valid: torch.Tensor  # (B, N*L) False at padding
    labels: torch.Tensor  # (B, T) answer + EOS, padded with -100
    num_docs: int
    with_answer: bool = True  # prepared with the answers (kept on the host: no device sync to ask)


class FiDReader:
    """A frozen T5-style encoder-decoder reading docs Fusion-in-Decoder style."""

    layout = "fid"

    def __init__(self, model: Any, tokenizer: Any, *, max_doc_tokens: int = 256, max_answer_tokens: int = 32) -> None:
        if not getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"layout 'fid' needs an encoder-decoder (T5-family) model, got {type(model).__name__}; "
                "use layout 'parallel' or 'sequential' for a decoder-only model"
            )
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.max_doc_tokens = max_doc_tokens
        self.max_answer_tokens = max_answer_tokens

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @staticmethod
    def doc_input(ex: Example, n: int) -> str:
        d = ex.docs[n]
        return f"question: {ex.question} title: {d.title} context: {d.text}" if n < len(ex.docs) else ""

    @torch.no_grad()
    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> FiDContext:
        if not examples or any(not ex.docs for ex in examples):
            raise ValueError("every question needs at least one doc")
        B, N = len(examples), num_docs(examples)
        texts = [self.doc_input(ex, n) if n < len(ex.docs) else "" for ex in examples for n in range(N)]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_doc_tokens, return_tensors="pt")
        exists = torch.tensor([n < len(ex.docs) for ex in examples for n in range(N)])
        attn = (enc["attention_mask"] * exists.unsqueeze(1)).to(self.device)  # (B*N, L): missing slots: no valid token
        encoder = self.model.get_encoder()
        hidden = encoder(input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device))
        hidden = hidden.last_hidden_state
        L = hidden.shape[1]
        key_doc = torch.arange(N, device=self.device).repeat_interleave(L).expand(B, -1).clone()
        labels = torch.full((B, 1), -100, dtype=torch.long, device=self.device)
        if with_answer:
            ans = [ex.answers[0] for ex in examples]
            lab = self.tokenizer(
                text_target=ans, padding=True, truncation=True, max_length=self.max_answer_tokens + 1, return_tensors="pt"
            )
            labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100).to(self.device)
        return FiDContext(hidden.reshape(B, N * L, -1), key_doc, attn.reshape(B, N * L).bool(), labels, N, with_answer)

    def _decode(self, ctx: FiDContext, log_w: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        B, M, _ = log_w.shape
        T = decoder_input_ids.shape[1]
        kb = key_bias(log_w, ctx.key_doc, ctx.key_valid)  # (B, M, S)
        mask = kb.unsqueeze(2).expand(B, M, T, kb.shape[-1]).reshape(B * M, 1, T, -1)
        hidden = ctx.hidden.repeat_interleave(M, dim=0) if M > 1 else ctx.hidden
        out = self.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
            attention_mask=mask,
            decoder_input_ids=decoder_input_ids.repeat_interleave(M, dim=0) if M > 1 else decoder_input_ids,
        )
        return out.logits  # (B*M, T, V)

    def answer_logprob(self, context: FiDContext, doc_weights: torch.Tensor) -> AnswerScores:
        ctx = context
        B = ctx.hidden.shape[0]
        check_weights(doc_weights, B, ctx.num_docs)
        _require_answers(ctx)
        M = doc_weights.shape[1]
        dec_in = self.model.prepare_decoder_input_ids_from_labels(labels=ctx.labels)
        logits = self._decode(ctx, log_weights(doc_weights.to(device=ctx.hidden.device, dtype=self.model.dtype)), dec_in)
        T = ctx.labels.shape[1]
        target = ctx.labels.clamp_min(0).repeat_interleave(M, dim=0).to(logits.device)
        lp = torch.log_softmax(upcast(logits), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        return AnswerScores(lp.reshape(B, M, T).to(doc_weights.device), ctx.labels != -100)

    @torch.no_grad()
    def doc_attention(self, context: FiDContext, aggregation: str) -> torch.Tensor:
        """Decoder cross-attention over each doc's encoder tokens (all docs at w=1).

        ``scores`` counts the first decoded token only (FiD); ``value_norm`` every answer token (Atlas).
        """
        ctx = context
        _require_answers(ctx)
        B, S = ctx.key_doc.shape
        zeros = torch.zeros(B, 1, ctx.num_docs, dtype=self.model.dtype, device=ctx.key_doc.device)
        mask = key_bias(zeros, ctx.key_doc, ctx.key_valid)
        dec_in = self.model.prepare_decoder_input_ids_from_labels(labels=ctx.labels)
        with eager_attention(self.model):
            out = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=ctx.hidden),
                attention_mask=mask.reshape(B, 1, 1, S),
                decoder_input_ids=dec_in,
                output_attentions=True,
                use_cache=True,
            )
        answer = ctx.labels != -100
        queries = answer & (torch.arange(answer.shape[1], device=answer.device) == 0) if aggregation == "scores" else answer
        cross = cache_of(out).cross_attention_cache
        values = [v for _, v, *_ in cross]
        return attention_per_doc(out.cross_attentions, values, ctx.key_doc, ctx.key_valid, queries, ctx.num_docs, aggregation)

    @torch.no_grad()
    def generate(self, examples: list[Example], keep: torch.Tensor, *, max_new_tokens: int = 16) -> list[str]:
        ctx = self.prepare(examples, with_answer=False)
        log_w = log_weights(keep.to(device=self.device, dtype=self.model.dtype).unsqueeze(1))
        start = self.model.config.decoder_start_token_id
        dec = torch.full((len(examples), 1), start, dtype=torch.long, device=self.device)
        for _ in range(max_new_tokens):
            nxt = self._decode(ctx, log_w, dec)[:, -1].argmax(-1, keepdim=True)
            dec = torch.cat([dec, nxt], dim=1)
            if bool((dec == self.tokenizer.eos_token_id).any(dim=1).all()):
                break
        return [
            t.strip()
            for t in self.tokenizer.batch_decode(cut_at_eos(dec[:, 1:], self.tokenizer.eos_token_id), skip_special_tokens=True)
        ]


def _require_answers(ctx: FiDContext) -> None:
    if not ctx.with_answer:
        raise ValueError("the context was prepared without answers; call prepare(..., with_answer=True)")
