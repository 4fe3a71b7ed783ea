"""A bi-encoder's frozen bottom: with ``train.train_layers: N`` the embeddings and all but the top N
layers never change, so a text's hidden states after them are the same at every evaluation. They
are kept per text (least recently used first out, within a memory budget) and each evaluation runs
only the trainable top layers: with MiniLM-L6 and ``train_layers: 2``, 2 of the 6 layers.

Used only for scoring without gradients in eval mode (the periodic and final evaluations); a
training forward pass runs the whole encoder, its dropout included. The cache forgets everything
when a frozen weight changes (compared with a copy of the frozen weights whenever a tensor's
storage or in-place version counter moved) or becomes trainable. A sweep hands the kept states
from row to row (:meth:`PrefixCache.rebind`): every row starts from the same frozen bottom.
Encoders of the BERT family (BERT, MiniLM, RoBERTa, XLM-R, ELECTRA) with right padding are
supported; any other encoder is run whole, as before.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .readers.doc_cache import DocCache

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra")


def _layers(encoder: Any) -> Any:
    return getattr(getattr(encoder, "encoder", None), "layer", None)


def supports(encoder: Any, tokenizer: Any) -> bool:
    """Whether :class:`PrefixCache` can split ``encoder`` (a BERT-family base model, right padding)."""
    config = getattr(encoder, "config", None)
    return (
        getattr(config, "model_type", None) in MODEL_TYPES
        and not getattr(config, "is_decoder", False)
        and hasattr(encoder, "embeddings")
        and _layers(encoder) is not None
        and getattr(tokenizer, "padding_side", "right") == "right"
    )


class PrefixCache:
    """Per-text hidden states after ``encoder``'s frozen embeddings and bottom layers."""

    def __init__(self, encoder: Any, budget_mb: float) -> None:
        self.encoder = encoder
        self.store = DocCache(budget_mb)
        self._fingerprint: tuple[Any, ...] | None = None
        self._reference: list[torch.Tensor] = []  # the frozen weights the kept states were computed with

    def __deepcopy__(self, memo: dict[int, Any]) -> PrefixCache:
        """A copied reranker (e.g. the start a trust region keeps) gets an empty cache of its own, not
        a copy of up to ``budget`` MB of kept states."""
        return PrefixCache(copy.deepcopy(self.encoder, memo), self.store.budget / 2**20)

    def rebind(self, encoder: Any) -> PrefixCache:
        """The same kept states for another encoder (a sweep's next row: a fresh copy of the same start);
        they are used only if its frozen weights equal those they were computed with."""
        other = PrefixCache(encoder, 0)
        other.store, other._reference = self.store, self._reference
        return other

    def depth(self) -> int:
        """How many bottom layers are frozen (0 when the embeddings train: nothing to keep)."""
        if any(p.requires_grad for p in self.encoder.embeddings.parameters()):
            return 0
        n = 0
        for layer in _layers(self.encoder):
            if any(p.requires_grad for p in layer.parameters()):
                break
            n += 1
        return n

    def _frozen_params(self, depth: int) -> list[torch.Tensor]:
        params = list(self.encoder.embeddings.parameters())
        for layer in list(_layers(self.encoder))[:depth]:
            params += list(layer.parameters())
        return params

    def _check(self, depth: int) -> None:
        """Forget everything if the frozen part is not what the kept states were computed with."""
        params = self._frozen_params(depth)
        fingerprint = (depth, *((p.data_ptr(), p._version) for p in params))
        if fingerprint == self._fingerprint:  # the same tensors, not written to since
            return
        same = len(params) == len(self._reference) and all(
            a.shape == b.shape and torch.equal(a, b) for a, b in zip(params, self._reference, strict=False)
        )
        if not same:
            self.store = self.store.emptied()
            self._reference = [p.detach().clone() for p in params]
        self._fingerprint = fingerprint

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)

    def _run(self, layers: list[Any], hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = self._mask(hidden, attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
        return hidden

    @torch.no_grad()
    def last_hidden_state(self, enc: Any) -> torch.Tensor:
        """``encoder(**enc).last_hidden_state`` (X, L, H), the frozen bottom read from the cache where kept."""
        depth = self.depth()
        if depth == 0:
            return self.encoder(**enc).last_hidden_state
        self._check(depth)
        ids, attention = enc["input_ids"], enc["attention_mask"]
        lengths = attention.sum(1).tolist()
        keys = [tuple(ids[i, :n].tolist()) for i, n in enumerate(lengths)]
        kept = [self.store.get(key) for key in keys]
        todo = [i for i, h in enumerate(kept) if h is None]
        layers = list(_layers(self.encoder))
        if todo:
            width = max(lengths[i] for i in todo)
            sub = {k: v[todo, :width] for k, v in enc.items()}
            sub_mask = sub["attention_mask"]
            embedded = self.encoder.embeddings(
                input_ids=sub["input_ids"], token_type_ids=sub.get("token_type_ids"), position_ids=None
            )
            bottom = self._run(layers[:depth], embedded, sub_mask)
            for j, i in enumerate(todo):
                kept[i] = [bottom[j, : lengths[i]].clone()]
                self.store.put(keys[i], kept[i])
        hidden = torch.zeros(ids.shape[0], ids.shape[1], kept[0][0].shape[-1], dtype=kept[0][0].dtype, device=ids.device)
        for i, (state,) in enumerate(kept):
            hidden[i, : lengths[i]] = state
        return self._run(layers[depth:], hidden, attention)
