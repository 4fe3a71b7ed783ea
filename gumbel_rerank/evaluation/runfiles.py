"""Standard outputs: TREC run files and qrels, per-question metrics, and paired significance tests."""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ..data.schema import Example, rank
from ..jsonsafe import dumps, write_json, write_text
from .evaluate import per_question
from .metrics import mean


def write_trec_run(
    examples: Sequence[Example], scores: Sequence[Sequence[float]], path: str | Path, tag: str, keep: int | None = None
) -> None:
    """``qid Q0 docid rank score tag`` per line, best first (ties to the lower index, as :func:`rank`);
    ``keep`` writes only the top ``keep`` docs of each question."""
    lines = [
        f"{ex.id} Q0 {ex.docs[i].id} {pos} {s[i]:.6f} {tag}\n"
        for ex, s in zip(examples, scores, strict=True)
        for pos, i in enumerate(rank(s)[:keep], 1)
    ]
    write_text(path, "".join(lines))


def write_qrels(examples: Sequence[Example], path: str | Path) -> None:
    """``qid 0 docid relevance`` for every candidate (1 = gold)."""
    write_text(path, "".join(f"{ex.id} 0 {d.id} {int(d.is_gold)}\n" for ex in examples for d in ex.docs))


def paired_permutation_test(a: Sequence[float], b: Sequence[float], *, rounds: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of mean(b - a) under random sign flips of the paired differences.

    Pairs with a NaN on either side are left out. Exact enumeration when there are at most 16 pairs.
    """
    diffs = [y - x for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if not diffs or all(d == 0 for d in diffs):
        return 1.0
    observed = abs(sum(diffs))
    if len(diffs) <= 16:
        signs = ([1 - 2 * ((m >> i) & 1) for i in range(len(diffs))] for m in range(2 ** len(diffs)))
        totals = [abs(sum(s * d for s, d in zip(sg, diffs, strict=True))) for sg in signs]
        return sum(t >= observed - 1e-12 for t in totals) / len(totals)
    rng = random.Random(seed)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed - 1e-12 for _ in range(rounds))
    return (hits + 1) / (rounds + 1)


def paired_tests(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """p of :func:`paired_permutation_test` for every metric both evaluations hold per question
    (``evaluate(..., detail=True)``'s ``per_question``; None, as JSON keeps NaN, counts as undefined)."""
    b, a = before.get("per_question") or {}, after.get("per_question") or {}

    def values(xs: Sequence[float | None]) -> list[float]:
        return [math.nan if x is None else float(x) for x in xs]

    return {m: paired_permutation_test(values(b[m]), values(a[m])) for m in b if m in a and len(a[m]) == len(b[m])}


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of a family of tests (each name -> its adjusted p): the
    smallest is multiplied by the family's size, the next by one less, kept monotone, capped at 1."""
    order = sorted(p_values, key=p_values.__getitem__)
    out: dict[str, float] = {}
    running = 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p_values[name]))
        out[name] = running
    return out


def write_comparison(
    out_dir: str | Path,
    examples: Sequence[Example],
    before: Sequence[Sequence[float]],
    after: Sequence[Sequence[float]],
    ks: Sequence[int],
) -> dict[str, dict[str, float]]:
    """Run files, qrels, per-question JSONL and metrics.json (with a paired test per metric) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_qrels(examples, out / "qrels.txt")
    write_trec_run(examples, before, out / "before.run", "zero-shot")
    write_trec_run(examples, after, out / "after.run", "trained")
    rows_b, rows_a = per_question(examples, before, ks), per_question(examples, after, ks)
    with (out / "per_question.jsonl").open("w") as f:
        for ex, rb, ra in zip(examples, rows_b, rows_a, strict=True):
            f.write(dumps({"id": ex.id, "before": rb, "after": ra}) + "\n")
    result = {}
    for name in rows_b[0] if rows_b else []:
        xs, ys = [r[name] for r in rows_b], [r[name] for r in rows_a]
        mb, ma = mean(xs), mean(ys)
        result[name] = {"before": mb, "after": ma, "p_value": paired_permutation_test(xs, ys)}
    write_json(out / "metrics.json", result, indent=2)
    return result


class MetricsLog:
    """A JSONL log (``metrics.jsonl``), one strict-JSON row per write, flushed at once. ``keep_until``
    (a resumed run) keeps the rows up to that step; ``write=False`` (not the main process) writes nothing.
    ``tracker(values, step)`` (accelerate's ``Accelerator.log``) also gets every row's numbers."""

    def __init__(
        self, path: Path, *, write: bool = True, keep_until: int | None = None, tracker: Callable[..., Any] | None = None
    ) -> None:
        self.path, self.enabled, self.tracker = path, write, tracker
        self.kept = (
            [x for x in path.read_text().splitlines() if json.loads(x)["step"] <= keep_until]
            if keep_until is not None and path.exists()
            else []
        )

    def __enter__(self) -> MetricsLog:
        self.file: IO[str] = self.path.open("w") if self.enabled else open(os.devnull, "w")
        self.file.writelines(x + "\n" for x in self.kept)
        return self

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(dumps(row) + "\n")
        self.file.flush()
        if self.tracker is not None:
            numbers = {k: v for k, v in row.items() if k != "step" and isinstance(v, int | float) and math.isfinite(v)}
            self.tracker(numbers, step=int(row["step"]))

    def __exit__(self, *exc: object) -> None:
        self.file.close()
