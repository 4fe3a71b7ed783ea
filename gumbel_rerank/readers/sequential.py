"""The ``sequential`` layout: the usual concatenated prompt. Every position after doc i (later docs'
tokens included) sees doc i's keys with the ``log w_i`` bias. A zero weight equals the doc removed
with the remaining tokens kept at their positions."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from ..data.schema import Example, num_docs
from ..masking import causal_block, key_bias
from .base import cache_of, to_device
from .decoder import DecoderContext, DecoderReader, enable_checkpointing


class SequentialReader(DecoderReader):
    layout = "sequential"

    def __init__(self, model: Any, tokenizer: Any, *, gradient_checkpointing: bool = False, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            enable_checkpointing(model)

    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> DecoderContext:
        self._check_examples(examples)
        prefix = self._prefix_ids()
        rows, owners, answer_len = [], [], []
        for ex in examples:
            row, owner = list(prefix), [-1] * len(prefix)
            for n, ids in enumerate(self._doc_ids(ex)):
                row += ids
                owner += [n] * len(ids)
            query, t = self._query_ids(ex, with_answer)
            rows.append(row + query)
            owners.append(owner + [-1] * len(query))
            answer_len.append(t)
        seq = self._left_pad(rows, [0] * len(rows), owners)
        ctx = DecoderContext(
            **seq, answer_len=torch.tensor(answer_len), num_docs=num_docs(examples), answer_tokens=max(answer_len)
        )
        return to_device(ctx, self.device)

    def _mask_and_cache(self, ctx: DecoderContext, log_w: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        B, M, _ = log_w.shape
        Q = ctx.ids.shape[1]
        idx = torch.arange(Q, device=ctx.ids.device)
        kb = key_bias(log_w, ctx.tok_doc, ctx.valid)  # (B, M, Q): what a later position sees of each key
        same_doc = (ctx.tok_doc.unsqueeze(2) == ctx.tok_doc.unsqueeze(1)) & (ctx.tok_doc >= 0).unsqueeze(1)
        bias = torch.where(same_doc.unsqueeze(1), torch.zeros((), dtype=log_w.dtype), kb.unsqueeze(2))  # (B, M, Q, Q)
        mask = bias + causal_block(idx, idx, log_w.dtype)
        return mask.reshape(B * M, 1, Q, Q), DynamicCache()

    def _keys(self, ctx: DecoderContext, out: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        return list(out.attentions), [v for _, v, *_ in cache_of(out)], ctx.tok_doc, ctx.valid

    def _all_keys(self, ctx: DecoderContext) -> tuple[torch.Tensor, torch.Tensor]:
        return ctx.tok_doc, ctx.valid
