"""Decoder-only readers (any causal LM): the ``parallel`` and ``sequential`` layouts.

Only public Hugging Face arguments are used: a 4-D float ``attention_mask`` (added to the attention
logits as-is), explicit ``position_ids``, a ``DynamicCache`` built from tensors, and
``logits_to_keep`` so that only the answer positions go through the LM head.

* ``parallel``: a shared prefix, then each doc encoded on its own from the same start position,
  once per batch and without gradient (the docs' keys and values do not depend on the weights).
  The question and answer tokens come after the longest doc and attend to every doc's keys with
  the ``log w`` bias. A zero weight equals the doc removed, exactly.
* ``sequential``: the usual concatenated prompt. Every position after doc i (later docs' tokens
  included) sees doc i's keys with the ``log w_i`` bias. A zero weight equals the doc removed with
  the remaining tokens kept at their positions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from ..data.schema import Example
from ..masking import causal_block, key_bias, log_weights, padding_bias
from .base import (
    AnswerScores,
    attention_per_doc,
    check_weights,
    cut_at_eos,
    doc_text,
    eager_attention,
    freeze,
    num_docs,
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


class DocCache:
    """Encoded docs (per layer keys and values) kept across steps, epochs and objectives, least
    recently used first out, within a memory budget. Keyed by the doc's token ids: the reader (and
    its prompt prefix) is fixed for the cache's life."""

    def __init__(self, budget_mb: float) -> None:
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self.hits = 0
        self.misses = 0
        self.items: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def get(self, key: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        value = self.items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple[int, ...], value: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        size = sum(k.nbytes + v.nbytes for k, v in value)
        if size > self.budget or key in self.items:
            return
        while self.used + size > self.budget:
            _, old = self.items.popitem(last=False)
            self.used -= sum(k.nbytes + v.nbytes for k, v in old)
        self.items[key] = value
        self.used += size


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

    @property
    def answer_tokens(self) -> int:
        return int(self.answer_len.max())


class DecoderReader:
    """A frozen causal LM reading docs in the ``parallel`` or ``sequential`` layout."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        layout: str = "parallel",
        max_doc_tokens: int = 256,
        max_answer_tokens: int = 32,
        template: PromptTemplate | None = None,
        gradient_checkpointing: bool = False,
        doc_cache_mb: float = 0,
    ) -> None:
        if layout not in ("parallel", "sequential"):
            raise ValueError(f"a decoder-only reader supports layouts 'parallel' and 'sequential', not {layout!r}")
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(f"{type(model).__name__} is an encoder-decoder model; use layout 'fid' for it")
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.layout = layout
        self.gradient_checkpointing = gradient_checkpointing
        # parallel: docs' keys/values do not depend on the weights, so they can outlive a step
        self.doc_cache = DocCache(doc_cache_mb) if doc_cache_mb > 0 and layout == "parallel" else None
        self._prefix_cache: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        if gradient_checkpointing:
            _enable_checkpointing(model, layout)
        self.max_doc_tokens = max_doc_tokens
        self.max_answer_tokens = max_answer_tokens
        self.template = template or PromptTemplate()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

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

    # ---- preparation --------------------------------------------------------------------------
    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> DecoderContext:
        if not examples or any(not ex.docs for ex in examples):
            raise ValueError("every question needs at least one doc")
        if self.layout == "parallel":
            return self._prepare_parallel(examples, with_answer)
        return self._prepare_sequential(examples, with_answer)

    def _left_pad(
        self, rows: list[list[int]], starts: list[int], docs: list[list[int]] | None = None
    ) -> dict[str, Any]:
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

    def _prepare_sequential(self, examples: list[Example], with_answer: bool) -> DecoderContext:
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
        return DecoderContext(**seq, answer_len=torch.tensor(answer_len), num_docs=num_docs(examples))

    @torch.no_grad()
    def _prepare_parallel(self, examples: list[Example], with_answer: bool) -> DecoderContext:
        prefix = self._prefix_ids()
        if not prefix:
            raise ValueError("the parallel layout needs a non-empty prompt prefix (the docs' shared start)")
        B, N, P = len(examples), num_docs(examples), len(prefix)
        doc_ids = [self._doc_ids(ex) + [[] for _ in range(N - len(ex.docs))] for ex in examples]
        L = max(len(ids) for row in doc_ids for ids in row)
        head_kv = self._prefix_kv(prefix)
        encoded = self._encode_docs([d for row in doc_ids for d in row if d], head_kv)
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer, (hk, hv) in enumerate(head_kv):  # per layer: prefix + every question's docs, padded to L
            H, D = hk.shape[1], hk.shape[3]
            keys = hk.new_zeros(B, N, H, L, D)
            values = hv.new_zeros(B, N, H, L, D)
            for b, row in enumerate(doc_ids):
                for n, d in enumerate(row):
                    if d:
                        k, v = encoded[tuple(d)][layer]
                        keys[b, n, :, : len(d)] = k
                        values[b, n, :, : len(d)] = v
            merged = [torch.cat([h.expand(B, -1, -1, -1), x.permute(0, 2, 1, 3, 4).reshape(B, H, N * L, D)], 2)
                      for h, x in ((hk, keys), (hv, values))]
            kv.append((merged[0], merged[1]))
        key_doc = torch.cat([torch.full((P,), -1), torch.arange(N).repeat_interleave(L)]).expand(B, -1)
        lengths = torch.tensor([[len(d) for d in row] for row in doc_ids])  # (B, N)
        in_doc = torch.arange(L).expand(B, N, L) < lengths.unsqueeze(-1)
        key_valid = torch.cat([torch.ones(B, P, dtype=torch.bool), in_doc.reshape(B, N * L)], dim=1)
        rows, answer_len = zip(*(self._query_ids(ex, with_answer) for ex in examples), strict=True)
        # The question starts after the longest of its own candidates: the same position whatever the mask.
        starts = [P + int(lengths[b].max()) for b in range(B)]
        q = self._left_pad(list(rows), starts)
        return DecoderContext(
            **q, answer_len=torch.tensor(answer_len), num_docs=N, kv=kv, key_doc=key_doc.clone(), key_valid=key_valid
        )

    def _prefix_kv(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (1, H, P, D) keys and values of the shared prompt prefix (computed once per reader)."""
        if self._prefix_cache is None or self._prefix_cache[0] != prefix:
            head = self.model.base_model(input_ids=torch.tensor([prefix]), position_ids=torch.arange(len(prefix))[None],
                                         past_key_values=DynamicCache(), use_cache=True).past_key_values
            self._prefix_cache = (prefix, [(k, v) for k, v, *_ in head])
        return self._prefix_cache[1]

    def _encode_docs(self, docs: list[list[int]], head_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[tuple[int, ...], Any]:
        """Keys and values of each distinct doc, continued from the prefix: per layer (H, len, D).

        Docs already in the doc cache are not run again; the others run as one batch.
        """
        out: dict[tuple[int, ...], Any] = {}
        todo: list[tuple[int, ...]] = []
        for d in map(tuple, docs):
            if d in out or d in todo:
                continue
            hit = self.doc_cache.get(d) if self.doc_cache is not None else None
            if hit is None:
                todo.append(d)
            else:
                out[d] = hit
        if todo:
            P, R, L = head_kv[0][0].shape[2], len(todo), max(len(d) for d in todo)
            ids = torch.full((R, L), self.pad_id, dtype=torch.long)
            attn = torch.zeros(R, P + L, dtype=torch.long)
            attn[:, :P] = 1
            for i, d in enumerate(todo):
                ids[i, : len(d)] = torch.tensor(d, dtype=torch.long)
                attn[i, P : P + len(d)] = 1
            cache = DynamicCache(ddp_cache_data=[(k.expand(R, -1, -1, -1), v.expand(R, -1, -1, -1)) for k, v in head_kv])
            res = self.model.base_model(input_ids=ids, attention_mask=attn, position_ids=torch.arange(P, P + L).expand(R, -1),
                                        past_key_values=cache, use_cache=True).past_key_values
            layers = [(k[:, :, P:], v[:, :, P:]) for k, v, *_ in res]
            for i, d in enumerate(todo):
                out[d] = [(k[i, :, : len(d)].clone(), v[i, :, : len(d)].clone()) for k, v in layers]
                if self.doc_cache is not None:
                    self.doc_cache.put(d, out[d])
        return out

    # ---- scoring ------------------------------------------------------------------------------
    def _mask_and_cache(self, ctx: DecoderContext, log_w: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        """The 4-D additive mask (B*M, 1, Q, keys) and the cache the query pass starts from."""
        B, M, _ = log_w.shape
        Q = ctx.ids.shape[1]
        dtype = log_w.dtype
        idx = torch.arange(Q)
        if self.layout == "parallel":
            own = causal_block(idx, idx, dtype) + padding_bias(ctx.valid, dtype).unsqueeze(1)
            assert ctx.kv is not None and ctx.key_doc is not None and ctx.key_valid is not None
            kb = key_bias(log_w, ctx.key_doc, ctx.key_valid)  # (B, M, S)
            S = kb.shape[-1]
            mask = torch.cat([kb.unsqueeze(2).expand(B, M, Q, S), own.unsqueeze(1).expand(B, M, Q, Q)], dim=-1)
            cache = DynamicCache(ddp_cache_data=[(_repeat(k, M), _repeat(v, M)) for k, v in ctx.kv])
            return mask.reshape(B * M, 1, Q, S + Q), cache
        kb = key_bias(log_w, ctx.tok_doc, ctx.valid)  # (B, M, Q): what a later position sees of each key
        same_doc = (ctx.tok_doc.unsqueeze(2) == ctx.tok_doc.unsqueeze(1)) & (ctx.tok_doc >= 0).unsqueeze(1)
        bias = torch.where(same_doc.unsqueeze(1), torch.zeros((), dtype=dtype), kb.unsqueeze(2))  # (B, M, Q, Q)
        mask = bias + causal_block(idx, idx, dtype)
        return mask.reshape(B * M, 1, Q, Q), DynamicCache()

    def answer_logprob(self, context: DecoderContext, doc_weights: torch.Tensor) -> AnswerScores:
        ctx = context
        B = ctx.ids.shape[0]
        check_weights(doc_weights, B, ctx.num_docs)
        T = _answer_tokens(ctx)
        M = doc_weights.shape[1]
        mask, cache = self._mask_and_cache(ctx, log_weights(doc_weights.to(self.model.dtype)))
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        self.model.train(checkpointed)  # HF recomputes layers only in training mode (no dropout is active: checked)
        try:
            out = self.model(
                input_ids=_repeat(ctx.ids, M), attention_mask=mask, position_ids=_repeat(ctx.pos, M),
                past_key_values=None if checkpointed else cache, use_cache=not checkpointed, logits_to_keep=T + 1,
            )
        finally:
            self.model.eval()
        logp = torch.log_softmax(upcast(out.logits[:, :-1]), dim=-1)  # (B*M, T, V): predictions of the last T tokens
        target = _repeat(ctx.ids[:, -T:], M).to(logp.device)
        token_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).reshape(B, M, T).to(doc_weights.device)
        token_mask = torch.arange(T).expand(B, T) >= (T - ctx.answer_len).unsqueeze(1)
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
        mask, cache = self._mask_and_cache(ctx, torch.zeros(B, 1, ctx.num_docs, dtype=self.model.dtype))
        with eager_attention(self.model):
            out = self.model(input_ids=ctx.ids, attention_mask=mask, position_ids=ctx.pos, past_key_values=cache,
                             use_cache=True, output_attentions=True, logits_to_keep=1)
        idx = torch.arange(Q)
        first = (Q - 1 - ctx.answer_len).unsqueeze(1)  # (B, 1): the position predicting the first answer token
        queries = idx == first if aggregation == "scores" else (idx >= first) & (idx < Q - 1)
        if self.layout == "parallel":
            assert ctx.kv is not None and ctx.key_doc is not None and ctx.key_valid is not None
            S = ctx.key_doc.shape[1]
            attentions = [a[..., :S] for a in out.attentions]
            values = [v for _, v in ctx.kv]
            return attention_per_doc(attentions, values, ctx.key_doc, ctx.key_valid, queries, ctx.num_docs, aggregation)
        values = [v for _, v, *_ in out.past_key_values]
        return attention_per_doc(out.attentions, values, ctx.tok_doc, ctx.valid, queries, ctx.num_docs, aggregation)

    # ---- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, examples: list[Example], keep: torch.Tensor, *, max_new_tokens: int = 16) -> list[str]:
        ctx = self.prepare(examples, with_answer=False)
        B = len(examples)
        log_w = log_weights(keep.to(self.model.dtype).unsqueeze(1))  # (B, 1, N)
        mask, cache = self._mask_and_cache(ctx, log_w)
        out = self.model(
            input_ids=ctx.ids, attention_mask=mask, position_ids=ctx.pos,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
        if self.layout == "parallel":
            assert ctx.key_doc is not None and ctx.key_valid is not None
            keys_doc = torch.cat([ctx.key_doc, ctx.tok_doc], dim=1)
            keys_valid = torch.cat([ctx.key_valid, ctx.valid], dim=1)
        else:
            keys_doc, keys_valid = ctx.tok_doc, ctx.valid
        seen = key_bias(log_w, keys_doc, keys_valid).unsqueeze(2)  # (B, 1, 1, S): a new token's view of all keys
        pos = ctx.pos[:, -1]
        tokens: list[torch.Tensor] = []
        done = torch.zeros(B, dtype=torch.bool)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1]
            if step == 0:  # min_new_tokens=1: SmolLM2 often ends right after "Answer:" otherwise
                logits = logits.index_fill(-1, torch.tensor([self.tokenizer.eos_token_id]), -float("inf"))
            nxt = logits.argmax(-1)  # (B,)
            tokens.append(nxt)
            done |= nxt == self.tokenizer.eos_token_id
            if done.all() or step == max_new_tokens - 1:
                break
            pos = pos + 1
            mask = torch.cat([seen, torch.zeros(B, 1, 1, step + 1, dtype=seen.dtype)], dim=-1)
            out = self.model(
                input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=pos.unsqueeze(1),
                past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1,
            )
        gen = torch.stack(tokens, dim=1)
        texts = self.tokenizer.batch_decode(cut_at_eos(gen, self.tokenizer.eos_token_id), skip_special_tokens=True)
        return [first_line(t) for t in texts]


def first_line(text: str) -> str:
    """The answer in a greedy continuation: its first non-empty line (models often start with a newline)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _answer_tokens(ctx: DecoderContext) -> int:
    if ctx.answer_tokens < 1:
        raise ValueError("the context was prepared without answers; call prepare(..., with_answer=True)")
    return ctx.answer_tokens


def _enable_checkpointing(model: Any, layout: str) -> None:
    """Per-layer activation recomputation for the sequential layout (its docs run with gradient).

    HF recomputes only in training mode, so the reader must have no active dropout there.
    """
    if layout != "sequential":
        raise ValueError("gradient checkpointing is for the sequential layout (parallel encodes docs without gradient)")
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
