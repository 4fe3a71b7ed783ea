"""The parallel layout's memory of encoded docs: a doc's keys and values do not depend on the
reranker's weights, so they can outlive a step."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch


def _nbytes(value: Any) -> int:
    """Bytes held by a tensor or a (nested) list / tuple of tensors."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    return sum(_nbytes(v) for v in value)


class DocCache:
    """Encoded docs (per layer keys and values) kept across steps, epochs and objectives, least
    recently used first out, within a memory budget. Keyed by the doc's token ids: the reader (and
    its prompt prefix) is fixed for the cache's life."""

    def __init__(self, budget_mb: float) -> None:
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self.hits = 0
        self.misses = 0
        self.items: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def emptied(self) -> DocCache:
        """A new, empty cache with the same budget (what was kept is stale)."""
        return DocCache(self.budget / 2**20)

    def get(self, key: tuple[int, ...]) -> Any:
        value = self.items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple[int, ...], value: Any) -> None:
        size = _nbytes(value)
        if size > self.budget or key in self.items:
            return
        while self.used + size > self.budget:
            _, old = self.items.popitem(last=False)
            self.used -= _nbytes(old)
        self.items[key] = value
        self.used += size
