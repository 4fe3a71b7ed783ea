"""Decoder-only readers (any causal LM): what the ``parallel`` and ``sequential`` layouts share.

Only public Hugging Face arguments are used: a 4-D float ``attention_mask`` (added to the attention
logits as-is), explicit ``position_ids``, a ``DynamicCache`` built from tensors, and
``logits_to_keep`` so that only the answer positions go through the LM head. A layout
(:class:`~gumbel_rerank.readers.parallel.ParallelReader`,
:class:`~gumbel_rerank.readers.sequential.SequentialReader`) supplies how a batch is laid out
(:meth:`DecoderReader.prepare`), the mask and cache a pass starts from (``_mask_and_cache``) and
which keys belong to which doc (``_keys``); scoring, attention and generation are written once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from ..data.schema import Example, doc_text
from ..masking import key_bias, log_weights
from .attention import answer_kernel, attention_kernel
from .base import (
    AnswerScores,
    attention_per_doc,
    cache_of,
    check_weights,
    cut_at_eos,
    eager_attention,
    freeze,
    kv_cache,
    model_device,
    upcast,
)


@dataclass(frozen=True)
class PromptTemplate:
    """The plain prompt (it separated gold from distractor docs better than a chat template)."""

    prefix: str = "Answer the question using the documents below.\n\n"
    doc: str = "Document: {doc}\n\n"
    query: str = "Question: {question}\nAnswer:"
    answer: str = " {answer}"
    # Scored after the answer, as FiD scores its EOS: the target says where the answer stops, in
    # every layout. A newline, since greedy answers are read up to the first line break.
    end: str = "\n"


@dataclass
class DecoderContext:
    """A tokenised batch. Query tensors are left-padded so every answer ends at the last position."""

    ids: torch.Tensor  # (B, Q) query (+ answer) tokens, or the whole prompt for sequential
    pos: torch.Tensor  # (B, Q) position ids
    valid: torch.Tensor  # (B, Q) False at padding
    tok_doc: torch.Tensor  # (B, Q) doc index of each token, -1 outside docs
    answer_len: torch.Tensor  # (B,) answer tokens per question (0 when prepared without answer)
    num_docs: int
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # parallel: per layer (B, H, S, D)
    key_doc: torch.Tensor | None = None  # parallel: (B, S) doc index of each cached key
    key_valid: torch.Tensor | None = None  # parallel: (B, S)
    answer_tokens: int = 0  # max of answer_len, kept on the host (no device sync to read it)


class DecoderReader:
    """A frozen causal LM reading docs; subclassed once per layout."""

    layout = ""
    gradient_checkpointing = False

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_doc_tokens: int = 256,
        max_answer_tokens: int = 32,
        template: PromptTemplate | None = None,
    ) -> None:
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(f"{type(model).__name__} is an encoder-decoder model; use layout 'fid' for it")
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.max_doc_tokens = max_doc_tokens
        self.max_answer_tokens = max_answer_tokens
        self.template = template or PromptTemplate()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    # ---- tokenisation -------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix_ids(self) -> list[int]:
        ids = list(self.tokenizer(self.template.prefix)["input_ids"])  # keeps a BOS where the model wants one
        eos = self.tokenizer.eos_token_id
        return ids[:-1] if ids and len(ids) > 1 and ids[-1] == eos else ids

    def _doc_ids(self, ex: Example) -> list[list[int]]:
        return [self._ids(self.template.doc.format(doc=doc_text(d.title, d.text)))[: self.max_doc_tokens] for d in ex.docs]

    def _query_ids(self, ex: Example, with_answer: bool) -> tuple[list[int], int]:
        query = self._ids(self.template.query.format(question=ex.question))
        if not with_answer:
            return query, 0
        answer = self._ids(self.template.answer.format(answer=ex.answers[0]))[: self.max_answer_tokens]
        if not answer:
            raise ValueError(f"question {ex.id!r}: the answer {ex.answers[0]!r} tokenises to nothing")
        answer += self._ids(self.template.end)  # the end marker, like FiD's EOS (kept when the answer is cut)
        return query + answer, len(answer)

    # ---- what a layout supplies --------------------------------------------------------------
    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> DecoderContext:
        raise NotImplementedError

    def _mask_and_cache(self, ctx: DecoderContext, log_w: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        """The 4-D additive mask (B*M, 1, Q, keys) and the cache the query pass starts from."""
        raise NotImplementedError

    def _keys(self, ctx: DecoderContext, out: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """After a pass over ``ctx`` with ``output_attentions``: per layer the attention to the doc keys and
        their values, with each key's doc index and validity."""
        raise NotImplementedError

    def _all_keys(self, ctx: DecoderContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Doc index and validity of every key a generated token sees (the prompt's and the cache's)."""
        raise NotImplementedError

    def _check_examples(self, examples: list[Example]) -> None:
        if not examples or any(not ex.docs for ex in examples):
            raise ValueError("every question needs at least one doc")

    def _left_pad(self, rows: list[list[int]], starts: list[int], docs: list[list[int]] | None = None) -> dict[str, Any]:
        width = max(len(r) for r in rows)
        B = len(rows)
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        pos = torch.zeros(B, width, dtype=torch.long)
        valid = torch.zeros(B, width, dtype=torch.bool)
        tok_doc = torch.full((B, width), -1, dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row)
            ids[b, width - n :] = torch.tensor(row)
            pos[b, width - n :] = torch.arange(starts[b], starts[b] + n)
            valid[b, width - n :] = True
            if docs is not None:
                tok_doc[b, width - n :] = torch.tensor(docs[b])
        return {"ids": ids, "pos": pos, "valid": valid, "tok_doc": tok_doc}  # DecoderContext fields

    # ---- scoring ------------------------------------------------------------------------------
    def answer_logprob(self, context: DecoderContext, doc_weights: torch.Tensor) -> AnswerScores:
        ctx = context
        B = ctx.ids.shape[0]
        check_weights(doc_weights, B, ctx.num_docs)
        T = _answer_tokens(ctx)
        M = doc_weights.shape[1]
        mask, cache = self._mask_and_cache(ctx, log_weights(doc_weights.to(device=ctx.ids.device, dtype=self.model.dtype)))
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        self.model.train(checkpointed)  # HF recomputes layers only in training mode (no dropout is active: checked)
        # checkpointed layers are recomputed in the backward, after the block: they keep the model's own kernel
        kernel = self.model.config._attn_implementation if checkpointed else answer_kernel(self.model)
        try:
            with attention_kernel(self.model, kernel):
                out = self.model(
                    input_ids=_repeat(ctx.ids, M),
                    attention_mask=mask,
                    position_ids=_repeat(ctx.pos, M),
                    **kv_cache(None if checkpointed else cache),
                    use_cache=not checkpointed,
                    logits_to_keep=T + 1,
                )
        finally:
            self.model.eval()
        logp = torch.log_softmax(upcast(out.logits[:, :-1]), dim=-1)  # (B*M, T, V): predictions of the last T tokens
        target = _repeat(ctx.ids[:, -T:], M).to(logp.device)
        token_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).reshape(B, M, T).to(doc_weights.device)
        token_mask = torch.arange(T, device=ctx.ids.device).expand(B, T) >= (T - ctx.answer_len).unsqueeze(1)
        return AnswerScores(token_lp, token_mask)

    @torch.no_grad()
    def doc_attention(self, context: DecoderContext, aggregation: str) -> torch.Tensor:
        """Attention from the positions that predict answer tokens to each doc's tokens (all docs at w=1).

        ``scores`` counts only the position that predicts the first answer token (FiD's first decoded
        token); ``value_norm`` counts every answer-predicting position (Atlas).
        """
        ctx = context
        B, Q = ctx.ids.shape
        _answer_tokens(ctx)
        mask, cache = self._mask_and_cache(ctx, torch.zeros(B, 1, ctx.num_docs, dtype=self.model.dtype, device=ctx.ids.device))
        with eager_attention(self.model):
            out = self._last_position(ctx, mask, cache, output_attentions=True)
        idx = torch.arange(Q, device=ctx.ids.device)
        first = (Q - 1 - ctx.answer_len).unsqueeze(1)  # (B, 1): the position predicting the first answer token
        queries = idx == first if aggregation == "scores" else (idx >= first) & (idx < Q - 1)
        attentions, values, key_doc, key_valid = self._keys(ctx, out)
        return attention_per_doc(attentions, values, key_doc, key_valid, queries, ctx.num_docs, aggregation)

    def _last_position(self, ctx: DecoderContext, mask: torch.Tensor, cache: DynamicCache, **extra: Any) -> Any:
        """One pass over the query tokens (cache kept), the LM head at the last position only."""
        return self.model(
            input_ids=ctx.ids,
            attention_mask=mask,
            position_ids=ctx.pos,
            **kv_cache(cache),
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )

    # ---- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, examples: list[Example], keep: torch.Tensor, *, max_new_tokens: int = 16) -> list[str]:
        ctx = self.prepare(examples, with_answer=False)
        B = len(examples)
        log_w = log_weights(keep.to(device=ctx.ids.device, dtype=self.model.dtype).unsqueeze(1))  # (B, 1, N)
        mask, cache = self._mask_and_cache(ctx, log_w)
        out = self._last_position(ctx, mask, cache)
        seen = key_bias(log_w, *self._all_keys(ctx)).unsqueeze(2)  # (B, 1, 1, S): a new token's view of all keys
        pos = ctx.pos[:, -1]
        tokens: list[torch.Tensor] = []
        done = torch.zeros(B, dtype=torch.bool, device=ctx.ids.device)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1]
            if step == 0:  # min_new_tokens=1: SmolLM2 often ends right after "Answer:" otherwise
                logits = logits.index_fill(-1, torch.tensor([self.tokenizer.eos_token_id], device=logits.device), -float("inf"))
            nxt = logits.argmax(-1)  # (B,)
            tokens.append(nxt)
            done |= nxt == self.tokenizer.eos_token_id
            if not done.all():  # a row whose first answer line is complete cannot change what it returns
                rows = torch.stack(tokens, dim=1)[~done].cpu()
                texts = self.tokenizer.batch_decode(cut_at_eos(rows, self.tokenizer.eos_token_id), skip_special_tokens=True)
                done[(~done).nonzero().squeeze(1)] = torch.tensor([first_line_complete(t) for t in texts], device=done.device)
            if done.all() or step == max_new_tokens - 1:
                break
            pos = pos + 1
            mask = torch.cat([seen, torch.zeros(B, 1, 1, step + 1, dtype=seen.dtype, device=seen.device)], dim=-1)
            out = self.model(
                input_ids=nxt.unsqueeze(1),
                attention_mask=mask,
                position_ids=pos.unsqueeze(1),
                **kv_cache(cache_of(out)),
                use_cache=True,
                logits_to_keep=1,
            )
        gen = torch.stack(tokens, dim=1).cpu()
        texts = self.tokenizer.batch_decode(cut_at_eos(gen, self.tokenizer.eos_token_id), skip_special_tokens=True)
        return [first_line(t) for t in texts]


def first_line(text: str) -> str:
    """The answer in a greedy continuation: its first non-empty line (models often start with a newline)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def first_line_complete(text: str) -> bool:
    """Whether more text can no longer change ``first_line(text)``: a non-empty line has ended.

    Only the last of ``splitlines`` may be unfinished (no line break after it), so once a finished line has
    content the first such line is the answer whatever follows; generation stops there instead of decoding
    ``max_new_tokens`` (EM/F1 evaluation was most of an evaluation's time; the answers are the same).
    """
    return any(line.strip() and line.splitlines()[0] != line for line in text.splitlines(keepends=True))


def _answer_tokens(ctx: DecoderContext) -> int:
    if ctx.answer_tokens < 1:
        raise ValueError("the context was prepared without answers; call prepare(..., with_answer=True)")
    return ctx.answer_tokens


def enable_checkpointing(model: Any) -> None:
    """Per-layer activation recomputation (the sequential layout: its docs run with gradient).

    HF recomputes only in training mode, so the reader must have no active dropout there.
    """
    active = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    if active or float(getattr(model.config, "attention_dropout", 0.0) or 0.0) > 0:
        raise ValueError(f"gradient checkpointing needs a reader without dropout; active in {active[:3] or 'attention'}")
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x name
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _repeat(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, ...) -> (B*M, ...), each row repeated M times in place (views of one question together)."""
    return x if m == 1 else x.repeat_interleave(m, dim=0)
