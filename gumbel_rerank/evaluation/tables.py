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


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Metric | before | after | change, in :data:`~gumbel_rerank.evaluation.metrics.COLUMNS` order."""
    names = columns({*before, *after}, sorted({int(m.split("@")[1]) for m in {*before, *after} if "@" in m}))
    rows = []
    for m in names:
        b, a = before.get(m), after.get(m)
        delta = a - b if isinstance(a, float) and isinstance(b, float) else None
        rows.append([m, fmt(b), fmt(a), f"{'+' if delta and delta > 0 else ''}{fmt(delta)}"])
    return markdown_table(["metric", "before", "after", "change"], rows)
