"""Plain-text tables: a GitHub markdown table and the before/after table every command prints."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .metrics import columns


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table: the header, its ``|---|`` rule, one line per row (each cell as ``str``)."""
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any) -> str:
    return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def before_after_table(before: dict[str, Any], after: dict[str, Any], p_values: dict[str, float] | None = None) -> str:
    """Metric | before | after | change (| p), in :data:`~gumbel_rerank.evaluation.metrics.COLUMNS` order;
    ``p_values``: a paired test's p per metric, shown in a last column."""
    names = columns({*before, *after}, sorted({int(m.split("@")[1]) for m in {*before, *after} if "@" in m}))
    rows = []
    for m in names:
        b, a = before.get(m), after.get(m)
        delta = a - b if isinstance(a, float) and isinstance(b, float) else None
        row = [m, fmt(b), fmt(a), f"{'+' if delta and delta > 0 else ''}{fmt(delta)}"]
        rows.append(row + ([fmt(p_values.get(m))] if p_values is not None else []))
    head = ["metric", "before", "after", "change"] + (["p (paired)"] if p_values is not None else [])
    return markdown_table(head, rows)
