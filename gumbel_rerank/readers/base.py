"""The reader interface shared by every layout and every objective.

A reader is a frozen LM. Objectives ask it one question: the log-probability of each gold answer
token given the question and the docs, with doc i's attention scaled by a weight (and, for attention
distillation, how much attention each doc receives). Weights come as
(B, M, N): M views per question, so one call serves one Gumbel sample (M=1), n one-doc views
(PDist, EMDR) or n leave-one-out views (LOOP).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..data.schema import Example
from .attention import attention_kernel

LAYOUTS = ("fid", "parallel", "sequential")


@dataclass
class AnswerScores:
    """Token log-probabilities of the gold answer.

    Attributes:
        token_logprobs: (B, M, T) log p(answer token t | question, docs under view m).
        token_mask: (B, T) True at real answer tokens (answers are padded to T).
    """

    token_logprobs: torch.Tensor
    token_mask: torch.Tensor

    def mean(self) -> torch.Tensor:
        """(B, M) length-normalised answer log-likelihood."""
        mask = self.token_mask.unsqueeze(1).to(self.token_logprobs.dtype)
        return (self.token_logprobs * mask).sum(-1) / mask.sum(-1)

    def total(self) -> torch.Tensor:
        """(B, M) answer log-likelihood (sum over tokens)."""
        mask = self.token_mask.unsqueeze(1).to(self.token_logprobs.dtype)
        return (self.token_logprobs * mask).sum(-1)


class Reader(Protocol):
    """A frozen LM that scores answers under doc weights and answers from kept docs."""

    layout: str
    model: Any

    def prepare(self, examples: list[Example], *, with_answer: bool = True) -> Any:
        """Tokenise (and, where the layout allows, encode the docs without gradient) once per batch."""
        ...

    def answer_logprob(self, context: Any, doc_weights: torch.Tensor) -> AnswerScores:
        """Gold-answer token log-probs given (B, M, N) doc weights; differentiable in the weights."""
        ...

    def doc_attention(self, context: Any, aggregation: str) -> torch.Tensor:
        """(B, N) attention mass each doc receives from the answer positions, all docs present (no gradient)."""
        ...

    def generate(self, examples: list[Example], keep: torch.Tensor, *, max_new_tokens: int = 16) -> list[str]:
        """Greedy answers using only the docs where ``keep`` (B, N) is True."""
        ...


def check_weights(doc_weights: torch.Tensor, batch_size: int, num_docs: int) -> None:
    if doc_weights.ndim != 3 or doc_weights.shape[0] != batch_size or doc_weights.shape[2] != num_docs:
        raise ValueError(f"doc_weights must have shape (B={batch_size}, M, N={num_docs}), got {tuple(doc_weights.shape)}")


def model_device(model: Any) -> torch.device:
    """Where a model's inputs go: its first parameter's device (the embedding's, for a sharded model)."""
    return next(model.parameters()).device


def to_device(obj: Any, device: torch.device) -> Any:
    """A context dataclass with every tensor field (and lists of tensor tuples) moved to ``device``."""
    import dataclasses

    def move(value: Any) -> Any:
        if torch.is_tensor(value):
            return value.to(device)
        if isinstance(value, list):
            return [tuple(move(t) for t in item) if isinstance(item, tuple) else move(item) for item in value]
        return value

    return dataclasses.replace(obj, **{f.name: move(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init})


def freeze(model: Any) -> Any:
    """Frozen means frozen: eval mode (no dropout) and no parameter requires a gradient."""
    model.eval()
    model.requires_grad_(False)
    return model


def cut_at_eos(tokens: torch.Tensor, eos: int | None) -> list[list[int]]:
    """Generated token rows, each cut before its first EOS."""
    rows = []
    for row in tokens.tolist():
        rows.append(row[: row.index(eos)] if eos is not None and eos in row else row)
    return rows


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """At least float32 for log-softmax (bf16/fp16 logits lose the answer's probability mass)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


@functools.cache
def _cache_keyword() -> str:
    """The key-value cache's keyword in transformers' forward calls: ``cache`` since transformers
    renamed it (``past_key_values`` warns, and goes in 5.40), ``past_key_values`` in the 5.x before."""
    from transformers import LlamaModel  # any model: the rename was library-wide

    return "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def kv_cache(cache: Any) -> dict[str, Any]:
    """``model(..., **kv_cache(cache))``: pass a key-value cache under this transformers' keyword."""
    return {_cache_keyword(): cache}


def cache_of(out: Any) -> Any:
    """The key-value cache a transformers forward returned (``out.cache``; ``out.past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


ADIST_AGGREGATIONS = ("scores", "value_norm")
ATLAS_NORM_TOKENS = 256  # Atlas divides its value-norm attention scores by 256 x layers x answer tokens


def eager_attention(model: Any) -> AbstractContextManager[None]:
    """Attention probabilities are only returned by the eager kernel: switch to it for one call."""
    return attention_kernel(model, "eager")


def attention_per_doc(
    attentions: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    key_doc: torch.Tensor,
    key_valid: torch.Tensor,
    queries: torch.Tensor,
    num_docs: int,
    aggregation: str,
) -> torch.Tensor:
    """The attention each doc receives from the answer positions, aggregated over layers and heads.

    Args:
        attentions: per layer (B, H, Q, S) attention probabilities of Q query positions over S keys.
        values: per layer (B, H_kv, S, D) value vectors of the same keys (used by ``value_norm``).
        key_doc, key_valid: (B, S) doc index of each key (-1 outside docs) and False at padding.
        queries: (B, Q) True at the query positions that count.
        aggregation: ``scores`` (FiD, Izacard & Grave 2021): the mean pre-softmax score over heads,
            layers, counted queries and the doc's tokens. Pre-softmax scores are not returned by the
            public API; log-probabilities differ from them by one constant per (layer, head, query),
            the same for every doc, so the teacher softmax over docs is unchanged.
            ``value_norm`` (Atlas's ``evalnormsum``): attention probability times the value vector's
            norm, averaged over heads, summed over layers, counted queries and the doc's tokens,
            and divided by 256 x layers x counted queries, as Atlas normalises it (its 256 is a
            fixed stand-in for the passage length).

    Returns:
        (B, N) per-doc scores (0 for empty doc slots).
    """
    if aggregation not in ADIST_AGGREGATIONS:
        raise ValueError(f"attention aggregation must be one of {ADIST_AGGREGATIONS}, got {aggregation!r}")
    in_doc = (key_doc.unsqueeze(-1) == torch.arange(num_docs, device=key_doc.device)) & key_valid.unsqueeze(-1)  # (B, S, N)
    q = queries[:, None, :, None]
    per_key = torch.zeros(key_doc.shape, dtype=torch.float32, device=key_doc.device)
    for layer, att in enumerate(attentions):
        att = att.float()
        if aggregation == "scores":
            logp = att.clamp_min(torch.finfo(torch.float32).tiny).log()
            per_key += torch.where(q, logp, torch.zeros(())).sum(dim=(1, 2))
        else:
            norms = values[layer].float().norm(dim=-1)  # (B, H_kv, S)
            norms = norms.repeat_interleave(att.shape[1] // norms.shape[1], dim=1)  # grouped-query heads
            per_key += (att * q * norms.unsqueeze(2)).sum(dim=(1, 2))
    totals = torch.einsum("bs,bsn->bn", per_key, in_doc.float())
    heads = attentions[0].shape[1]
    if aggregation == "value_norm":
        return totals / (heads * ATLAS_NORM_TOKENS * len(attentions) * queries.sum(-1, keepdim=True).clamp_min(1).float())
    count = in_doc.sum(1).float() * queries.sum(-1, keepdim=True).float() * heads * len(attentions)
    return torch.where(count > 0, totals / count.clamp_min(1), torch.zeros(()))
