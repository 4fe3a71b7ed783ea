"""A sweep's report: table.md / table.csv (mean ± sd over seeds, paired tests), summary.json and plots.

One code path for ``compare`` and the reproduction groups; columns: :data:`gumbel_rerank.evaluation.metrics.COLUMNS`;
p-values: paired permutation tests on per-question values (averaged over seeds) against G-Rerank, or
in an ablation sweep (no G-Rerank row) against the row named ``default``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import columns
from ..evaluation.runfiles import paired_permutation_test
from ..evaluation.tables import markdown_table
from ..objectives import OBJECTIVES, title

Runs = dict[str, list[dict[str, Any]]]  # row name -> its result files (one per seed), zero-shot first


def load_results(sweep_dir: str | Path) -> Runs:
    """Row name -> its runs (one per seed): zero-shot first, then the rows in their configs' order."""
    by_row: Runs = {}
    for f in sorted((Path(sweep_dir) / "runs").glob("*.json")):
        res = json.loads(f.read_text())
        by_row.setdefault(res["row"], []).append(res)
    return ordered(by_row)


def ordered(by_row: Runs) -> Runs:
    """Zero-shot first, then the objectives in registry order, then the other rows (ablations) by name."""
    rank = {name: i for i, name in enumerate(["zero-shot", *OBJECTIVES])}
    return {name: by_row[name] for name in sorted(by_row, key=lambda n: (rank.get(n, len(rank)), n))}


def per_question_runs(rows: dict[str, dict[str, Any]], k: int) -> Runs:
    """:func:`load_results`' shape from bare per-question values, e.g. a second held-out set's
    (``{"zero-shot" or "<row>.seed<s>": {"row", "seed", "per_question"}}``): each run's held-out value of
    a metric is the mean over the questions that have one, so :func:`start_table` reads them as result files."""
    by_row: Runs = {}
    for name, entry in rows.items():
        held_out = {}
        for metric, vals in entry["per_question"].items():
            mean = defined_mean(vals)
            if mean is not None:
                held_out[metric] = mean
        run = {**entry, "row": entry.get("row", name.split(".seed")[0]), "held_out": held_out, "config": {"eval": {"ks": [k]}}}
        by_row.setdefault(run["row"], []).append(run)
    return ordered(by_row)


def defined_mean(vals: Sequence[float | None]) -> float | None:
    """The mean of the values that are defined (not None, not NaN); None when none is."""
    real = [v for v in vals if v is not None and v == v]
    return sum(real) / len(real) if real else None


def value(res: dict[str, Any], metric: str) -> float | None:
    if metric == "seconds":
        return res.get("seconds")
    if metric.startswith("mining_"):
        return res["mining"].get(metric[len("mining_") :])
    return res["held_out"].get(metric)


def summarise(runs: list[dict[str, Any]], metric: str) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation and count over seeds (None if the metric is missing)."""
    vals = [v for v in (value(r, metric) for r in runs) if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def cell(s: tuple[float, float, int] | None, metric: str = "") -> str:
    """Mean (± sd over seeds): rates in percent, an answer NLL in nats per token."""
    if s is None:
        return "n/a"
    m, sd, n = s
    scale, digits = (1.0, 3) if "nll" in metric else (100.0, 1)
    return f"{m * scale:.{digits}f}" if n == 1 else f"{m * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def seed_mean_values(runs: list[dict[str, Any]], metric: str) -> list[float] | None:
    """Each question's value averaged over the row's seeds (NaN where no seed has one)."""
    if not runs or not all(metric in r.get("per_question", {}) for r in runs):
        return None
    out = []
    for vals in zip(*(r["per_question"][metric] for r in runs), strict=True):
        real = [v for v in vals if v is not None]
        out.append(sum(real) / len(real) if real else float("nan"))
    return out


def bootstrap_ci(runs: list[dict[str, Any]], metric: str, *, resamples: int = 2000) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the mean over questions (per-question values averaged over seeds)."""
    vals = seed_mean_values(runs, metric)
    kept = np.array([v for v in vals or [] if v == v])
    if not kept.size:
        return None
    rng = np.random.default_rng(0)
    means = kept[rng.integers(0, kept.size, (resamples, kept.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ci_cell(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def paired_p(base: list[dict[str, Any]], other: list[dict[str, Any]], metric: str) -> float | None:
    """Paired permutation test on per-question values averaged over each row's seeds."""
    a, b = seed_mean_values(base, metric), seed_mean_values(other, metric)
    if a is None or b is None:
        return None
    keep = [i for i in range(len(a)) if a[i] == a[i] and b[i] == b[i]]
    if not keep:
        return None
    return _permutation_p(tuple(a[i] for i in keep), tuple(b[i] for i in keep))


@functools.lru_cache(maxsize=1024)
def _permutation_p(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """One report asks for the same pair in several tables: test it once."""
    return paired_permutation_test(a, b)


def reference_row(by_row: Runs) -> str:
    """The row every other row is tested against: G-Rerank, or in an ablation sweep (a ``default`` row
    and no G-Rerank row) the default. A comparison whose G-Rerank row has not run yet is still one."""
    return "default" if "default" in by_row and "gumbel" not in by_row else "gumbel"


def seeds_cell(name: str, runs: list[dict[str, Any]]) -> str:
    return "-" if name == "zero-shot" else str(len(runs))


def _config(by_row: Runs) -> dict[str, Any] | None:
    return next((r["config"] for runs in by_row.values() for r in runs if r.get("config")), None)


def metric_columns(by_row: Runs) -> list[str]:
    cfg = _config(by_row)
    ks = cfg["eval"]["ks"] if cfg else [5]
    available = {
        f"{p}{m}"
        for runs in by_row.values()
        for r in runs
        for p, part in (("", "held_out"), ("mining_", "mining"))
        for m in r.get(part, {})
    }
    return columns(available, ks, prefixes=("", "mining_"))


def test_k(by_row: Runs) -> int:
    cfg = _config(by_row)
    return max(cfg["eval"]["ks"]) if cfg else 5


def group_table(by_row: Runs) -> str:
    ref, k = reference_row(by_row), test_k(by_row)
    base = by_row.get(ref)
    cols = metric_columns(by_row)
    tests = (f"R@{k}", f"bridge_R@{k}")
    head = ["row", "seeds", *cols, f"95% CI R@{k}", *(f"p {m} vs {ref}" for m in tests), "train s"]
    rows = []
    for name, runs in by_row.items():
        ps = [paired_p(base, runs, m) if base and name != ref else None for m in tests]
        secs = summarise(runs, "seconds") if name != "zero-shot" else None
        cells = [
            seeds_cell(name, runs),
            *(cell(summarise(runs, m), m) for m in cols),
            ci_cell(bootstrap_ci(runs, f"R@{k}")),
            *("" if p is None else f"{p:.3f}" for p in ps),
            "" if secs is None else f"{secs[0]:.0f}",
        ]
        rows.append([name, *cells])
    return markdown_table(head, rows)


def summary_rows(by_row: Runs) -> dict[str, dict[str, Any]]:
    """Row -> mean of every metric over seeds, ``p_vs_<ref>_<metric>`` and seconds (summary.json)."""
    ref, k = reference_row(by_row), test_k(by_row)
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by_row.items():
        row: dict[str, Any] = {m: s[0] for m in metric_columns(by_row) if (s := summarise(runs, m)) is not None}
        row["seeds"] = len(runs) if name != "zero-shot" else 0
        secs = summarise(runs, "seconds")
        if name != "zero-shot" and secs is not None:
            row["seconds"] = secs[0]
        if ref in by_row and name != ref:
            for m in (f"R@{k}", f"bridge_R@{k}"):
                row[f"p_vs_{ref}_{m}"] = paired_p(by_row[ref], runs, m)
        out[name] = row
    return out


def start_table(by_row: Runs, *, more: bool = False) -> str:
    """The start's own values, then each row's change against it with its paired p (R@2, R@k, MRR, answer
    NLL given the top k; per-question values averaged over the row's seeds), and its gain as a share of
    the supervised row's (the positive control) where that is a gain with p < 0.05. The caption says
    whether the control moved; where it did not, this setting cannot separate the objectives. ``more``:
    FullSupport@k, answer-doc and bridge-doc R@k instead (p n/a where a run kept no per-question values
    of a metric: answer-doc R@k before it was kept)."""
    start, sup, k = by_row.get("zero-shot"), by_row.get("supervised"), test_k(by_row)
    if not start:
        return ""
    metrics = [("R@2", "R@2"), (f"R@{k}", f"R@{k}"), ("MRR", "RR"), (f"answer NLL given the top {k}", "answer_nll")]
    if more:
        metrics = [(f"FullSupport@{k}", f"FullSupport@{k}"), (f"answer-doc R@{k}", f"answer_R@{k}")]
        metrics.append((f"bridge R@{k}", f"bridge_R@{k}"))
    kept = summarise if more else seed_mean_values  # more: a held-out mean suffices (its p is then n/a)
    metrics = [(label, m) for label, m in metrics if kept(start, m) is not None]

    def change(runs: list[dict[str, Any]], m: str) -> float | None:
        a, b = summarise(start, m), summarise(runs, m)
        return None if a is None or b is None else b[0] - a[0]

    def fmt_change(d: float | None, m: str) -> str:
        return "n/a" if d is None else (f"{d:+.3f}" if "nll" in m else f"{100 * d:+.1f}")

    def absolute(m: str) -> str:
        s = summarise(start, m)
        return "n/a" if s is None else (f"{s[0]:.3f}" if "nll" in m else f"{100 * s[0]:.1f}")

    def gain(m: str) -> float | None:
        """The control's change, where it is an improvement with p < 0.05: a share of a gain not shown to
        exist (supervised R@5 +0.6, p 0.84) would be noise (-468%)."""
        d, p = (change(sup, m), paired_p(start, sup, m)) if sup else (None, None)
        better = d is not None and (d < 0 if "nll" in m else d > 0)
        return d if better and p is not None and p < 0.05 else None

    gains = {m: gain(m) for _, m in metrics}
    rows = [["zero-shot (the start, absolute)", "-", *(absolute(m) for _, m in metrics)]]
    for name, runs in by_row.items():
        if name == "zero-shot":
            continue
        cells = [str(len(runs))]
        for _, m in metrics:
            p = paired_p(start, runs, m)
            d, control = change(runs, m), gains[m]
            share = f", {d / control + 0.0:.0%} of supervised" if d is not None and control and name != "supervised" else ""
            cells.append(f"{fmt_change(d, m)} (p {'n/a' if p is None else f'{p:.3f}'}{share})")
        rows.append([title(name), *cells])
    caption = (
        "The zero-shot start's values, then each row's change against it (points of percent; NLL in nats per token, "
        "lower is better) with its paired p, and its share of the supervised row's change where that is a gain "
        "with p < 0.05."
    )
    if more:
        caption = (
            "The same rows' change against the start in more metrics (points of percent) with its paired p, and "
            "its share of the supervised row's change where that is a gain with p < 0.05."
        )
    elif sup and any(m == f"R@{k}" for _, m in metrics):
        d, p = change(sup, f"R@{k}"), paired_p(start, sup, f"R@{k}")
        moved = d is not None and d > 0 and p is not None and p < 0.05
        caption += f" Positive control: supervised R@{k} {fmt_change(d, f'R@{k}')} (p {p:.3f}): " + (
            "it moved, so this setting can separate the objectives."
            if moved
            else "it did not move clearly, so this setting cannot separate the objectives; read no verdict from it."
        )
    return caption + "\n\n" + markdown_table(["row", "seeds", *(label for label, _ in metrics)], rows)


def describe(by_row: Runs) -> str:
    cfg = _config(by_row)
    if cfg is None:
        return ""
    d, r, rd, o, t = cfg["data"], cfg["reranker"], cfg["reader"], cfg["objective"], cfg["train"]
    held = len(next(iter(by_row.values()))[0]["held_out_scores"])
    return (
        f"Data `{d['source']}` ({d['num_train']} training questions, {held} held-out, >= {d['min_docs']} docs each); "
        f"reranker {r['model']} ({r['kind']}); reader {rd['model']} ({rd['layout']} layout); "
        f"{t['steps']} steps x batch {t['batch_size']} per row (lr {t['lr']}), k={o['k']}."
    )
