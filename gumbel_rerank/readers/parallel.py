"""The ``parallel`` layout: a shared prefix, then each doc encoded on its own from the same start
position, once per batch and without gradient (the docs' keys and values do not depend on the
weights, so :class:`DocCache` may keep them across steps). The question and answer tokens come after
the longest doc and attend to every doc's keys with the ``log w`` bias. A zero weight equals the doc
removed, exactly."""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import DynamicCache

from ..buckets import BUCKET_RATIO, length_groups
from ..data.schema import Example, num_docs
from ..masking import causal_block, key_bias, padding_bias
from .base import cache_of, kv_cache, to_device
from .decoder import DecoderContext, DecoderReader, _repeat
from .doc_cache import DocCache


class ParallelReader(DecoderReader):
    layout = "parallel"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        doc_cache_mb: float = 0,
        doc_dtype: torch.dtype | None = None,
        doc_cache_dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.doc_cache = DocCache(doc_cache_mb) if doc_cache_mb > 0 else None
        # the validation docs' own cache (selection.Selector), kept across the runs that share this reader:
        # training docs streaming through the main one cannot evict them
        self.validation_cache = DocCache(doc_cache_mb) if doc_cache_mb > 0 else None
        # the encoded docs' keys and values are kept (and used, cached or not, so a hit equals a miss) in this dtype
        self.doc_cache_dtype = doc_cache_dtype
        self._prefix_cache: dict[torch.dtype, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.doc_model = self._doc_model(doc_dtype)
        # each question's docs are encoded in batches whose every doc is at least this share of the batch's
        # longest (length_buckets; 0: one padded batch)
        self.bucket_ratio = BUCKET_RATIO

    def _doc_model(self, doc_dtype: torch.dtype | None) -> Any:
        """The model the docs are encoded with: the reader itself, or a frozen copy in ``doc_dtype``
        (``reader.doc_dtype: bfloat16`` under a float32 reader: the no-gradient doc pass at bf16 speed,
        the cache at half the memory; the question and answer positions stay in the reader's precision)."""
        if doc_dtype is None or doc_dtype == self.model.dtype:
            return self.model
        if getattr(self.model, "hf_device_map", None):
            raise ValueError("reader.doc_dtype needs a reader on one device (not reader.device_map); set reader.dtype instead")
        return copy.deepcopy(self.model).to(doc_dtype).eval().requires_grad_(False)

    def forget(self) -> None:
        """Drop the cached prefix and doc encodings: the reader's weights changed (adapt-reader)."""
        self._prefix_cache = {}
        if self.doc_model is not self.model:
            self.doc_model = self._doc_model(self.doc_model.dtype)
        if self.doc_cache is not None:
            self.doc_cache = self.doc_cache.emptied()
        if self.validation_cache is not None:
            self.validation_cache = self.validation_cache.emptied()

    @torch.no_grad()
    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> DecoderContext:
        self._check_examples(examples)
        prefix = self._prefix_ids()
        if not prefix:
            raise ValueError("the parallel layout needs a non-empty prompt prefix (the docs' shared start)")
        B, N, P = len(examples), num_docs(examples), len(prefix)
        doc_ids = [self._doc_ids(ex) + [[] for _ in range(N - len(ex.docs))] for ex in examples]
        L = max(len(ids) for row in doc_ids for ids in row)
        head_kv = self._prefix_kv(prefix, self.model)
        encoded = self._encode_docs([[d for d in row if d] for row in doc_ids], prefix)
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer, (hk, hv) in enumerate(head_kv):  # per layer: prefix + every question's docs, padded to L
            H, D = hk.shape[1], hk.shape[3]
            keys = hk.new_zeros(B, N, H, L, D)
            values = hv.new_zeros(B, N, H, L, D)
            for b, row in enumerate(doc_ids):
                for n, d in enumerate(row):
                    if d:
                        k, v = encoded[tuple(d)][layer]
                        keys[b, n, :, : len(d)] = k  # a copy into the reader's dtype (docs may be in doc_dtype)
                        values[b, n, :, : len(d)] = v
            merged = [
                torch.cat([h.expand(B, -1, -1, -1), x.permute(0, 2, 1, 3, 4).reshape(B, H, N * L, D)], 2)
                for h, x in ((hk, keys), (hv, values))
            ]
            kv.append((merged[0], merged[1]))
        key_doc = torch.cat([torch.full((P,), -1), torch.arange(N).repeat_interleave(L)]).expand(B, -1)
        lengths = torch.tensor([[len(d) for d in row] for row in doc_ids])  # (B, N)
        in_doc = torch.arange(L).expand(B, N, L) < lengths.unsqueeze(-1)
        key_valid = torch.cat([torch.ones(B, P, dtype=torch.bool), in_doc.reshape(B, N * L)], dim=1)
        rows, answer_len = zip(*(self._query_ids(ex, with_answer) for ex in examples), strict=True)
        # The question starts after the longest of its own candidates: the same position whatever the mask.
        starts = [P + int(lengths[b].max()) for b in range(B)]
        q = self._left_pad(list(rows), starts)
        ctx = DecoderContext(
            **q,
            answer_len=torch.tensor(answer_len),
            num_docs=N,
            kv=kv,
            key_doc=key_doc.clone(),
            key_valid=key_valid,
            answer_tokens=max(answer_len),
        )
        return to_device(ctx, self.device)  # ids and masks built on the CPU; the doc keys are there already

    def _prefix_kv(self, prefix: list[int], model: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (1, H, P, D) keys and values of the shared prompt prefix under ``model`` (the reader
        or its doc model; computed once per reader and precision)."""
        cached = self._prefix_cache.get(model.dtype)
        if cached is None or cached[0] != prefix:
            head = model.base_model(
                input_ids=torch.tensor([prefix], device=self.device),
                position_ids=torch.arange(len(prefix), device=self.device)[None],
                **kv_cache(DynamicCache()),
                use_cache=True,
            )
            cached = self._prefix_cache[model.dtype] = (prefix, [(k, v) for k, v, *_ in cache_of(head)])
        return cached[1]

    def _encode_docs(self, questions: list[list[list[int]]], prefix: list[int]) -> dict[tuple[int, ...], Any]:
        """Keys and values of each distinct doc of each question, continued from the prefix: per layer
        (H, len, D), in the doc model's precision.

        Docs already in the doc cache (or earlier in this call) are not run again. Each question's other
        docs run longest first, in batches of similar length (:func:`length_buckets`), so that a batch
        pads little and a question's encodings do not depend on which questions share its batch (one
        process or several, any batch size).
        """
        out: dict[tuple[int, ...], Any] = {}
        keep = self.doc_cache_dtype
        head_kv = self._prefix_kv(prefix, self.doc_model)
        for docs in questions:
            todo: list[tuple[int, ...]] = []
            for d in map(tuple, docs):
                if d in out or d in todo:
                    continue
                hit = self.doc_cache.get(d) if self.doc_cache is not None else None
                if hit is None:
                    todo.append(d)
                else:
                    out[d] = hit
            for chunk in length_buckets(todo, self.bucket_ratio):
                for d, layers in zip(chunk, self._encode_chunk(chunk, head_kv), strict=True):
                    out[d] = [(k.to(keep or k.dtype, copy=True), v.to(keep or v.dtype, copy=True)) for k, v in layers]
                    if self.doc_cache is not None:
                        self.doc_cache.put(d, out[d])
        return out

    def _encode_chunk(self, docs: list[tuple[int, ...]], head_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> list[Any]:
        """One forward over ``docs`` padded to the longest of them, continued from the prefix: per doc,
        per layer (H, len, D) views of the batch's keys and values."""
        P, R, L = head_kv[0][0].shape[2], len(docs), max(len(d) for d in docs)
        ids = torch.full((R, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros(R, P + L, dtype=torch.long)
        attn[:, :P] = 1
        for i, d in enumerate(docs):
            ids[i, : len(d)] = torch.tensor(d, dtype=torch.long)
            attn[i, P : P + len(d)] = 1
        cache = DynamicCache(ddp_cache_data=[(k.expand(R, -1, -1, -1), v.expand(R, -1, -1, -1)) for k, v in head_kv])
        res = self.doc_model.base_model(
            input_ids=ids.to(self.device),
            attention_mask=attn.to(self.device),
            position_ids=torch.arange(P, P + L, device=self.device).expand(R, -1),
            **kv_cache(cache),
            use_cache=True,
        )
        layers = [(k[:, :, P:], v[:, :, P:]) for k, v, *_ in cache_of(res)]
        return [[(k[i, :, : len(d)], v[i, :, : len(d)]) for k, v in layers] for i, d in enumerate(docs)]

    def _mask_and_cache(self, ctx: DecoderContext, log_w: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        B, M, _ = log_w.shape
        Q = ctx.ids.shape[1]
        idx = torch.arange(Q, device=ctx.ids.device)
        own = causal_block(idx, idx, log_w.dtype) + padding_bias(ctx.valid, log_w.dtype).unsqueeze(1)
        assert ctx.kv is not None and ctx.key_doc is not None and ctx.key_valid is not None
        kb = key_bias(log_w, ctx.key_doc, ctx.key_valid)  # (B, M, S)
        S = kb.shape[-1]
        mask = torch.cat([kb.unsqueeze(2).expand(B, M, Q, S), own.unsqueeze(1).expand(B, M, Q, Q)], dim=-1)
        cache = DynamicCache(ddp_cache_data=[(_repeat(k, M), _repeat(v, M)) for k, v in ctx.kv])
        return mask.reshape(B * M, 1, Q, S + Q), cache

    def _keys(self, ctx: DecoderContext, out: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        assert ctx.kv is not None and ctx.key_doc is not None and ctx.key_valid is not None
        S = ctx.key_doc.shape[1]  # the cached doc keys come first; the query's own keys carry no doc
        return [a[..., :S] for a in out.attentions], [v for _, v in ctx.kv], ctx.key_doc, ctx.key_valid

    def _all_keys(self, ctx: DecoderContext) -> tuple[torch.Tensor, torch.Tensor]:
        assert ctx.key_doc is not None and ctx.key_valid is not None
        return torch.cat([ctx.key_doc, ctx.tok_doc], dim=1), torch.cat([ctx.key_valid, ctx.valid], dim=1)


def length_buckets(docs: list[tuple[int, ...]], ratio: float) -> list[list[tuple[int, ...]]]:
    """``docs`` longest first, cut into batches whose every doc is at least ``ratio`` times as long as the
    batch's first (longest): a batch pads at most ``1 - ratio`` of its positions. HotpotQA's 10 paragraphs
    a question (up to 160 tokens, mean 116) pad 27% of a single batch and 4% bucketed at 0.8. The
    encodings do not depend on the batching (padding is masked). ``ratio`` 0: one padded batch."""
    return [[docs[i] for i in group] for group in length_groups([len(d) for d in docs], ratio)]
