"""A sweep's report: table.md / table.csv (mean ± sd over seeds, paired tests), summary.json and plots.

One code path for ``compare`` and the reproduction groups; columns: :data:`gumbel_rerank.metrics.COLUMNS`;
p-values: paired permutation tests on per-question values (averaged over seeds) against G-Rerank, or
in an ablation sweep (no G-Rerank row) against the row named ``default``.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .jsonsafe import write_json
from .metrics import columns
from .objectives import OBJECTIVES
from .runfiles import paired_permutation_test

Runs = dict[str, list[dict[str, Any]]]  # row name -> its result files (one per seed), zero-shot first


def load_results(sweep_dir: str | Path) -> Runs:
    """Row name -> its runs (one per seed): zero-shot first, then the rows in their configs' order."""
    by_row: Runs = {}
    for f in sorted((Path(sweep_dir) / "runs").glob("*.json")):
        res = json.loads(f.read_text())
        by_row.setdefault(res["row"], []).append(res)
    rank = {name: i for i, name in enumerate(["zero-shot", *OBJECTIVES])}  # then the other rows (ablations) by name
    return {name: by_row[name] for name in sorted(by_row, key=lambda n: (rank.get(n, len(rank)), n))}


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


def _per_question(runs: list[dict[str, Any]], metric: str) -> list[float] | None:
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
    vals = _per_question(runs, metric)
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
    a, b = _per_question(base, metric), _per_question(other, metric)
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


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table: the header, its ``|---|`` rule, one line per row (each cell as ``str``)."""
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


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


def fmt(value: Any) -> str:
    return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Metric | before | after | change, in :data:`~gumbel_rerank.metrics.COLUMNS` order."""
    names = columns({*before, *after}, sorted({int(m.split("@")[1]) for m in {*before, *after} if "@" in m}))
    rows = []
    for m in names:
        b, a = before.get(m), after.get(m)
        delta = a - b if isinstance(a, float) and isinstance(b, float) else None
        rows.append([m, fmt(b), fmt(a), f"{'+' if delta and delta > 0 else ''}{fmt(delta)}"])
    return markdown_table(["metric", "before", "after", "change"], rows)


def write_report(sweep_dir: str | Path, title: str = "") -> Path | None:
    """table.md, table.csv, summary.json, recall.png, recall_at_k.png and loss_gap.png of a sweep folder;
    the path of table.md (None while nothing has trained)."""
    sweep_dir = Path(sweep_dir)
    by_row = load_results(sweep_dir)
    if _config(by_row) is None:
        return None
    ref = reference_row(by_row)
    gaps = [(n, gap_summary(r)) for n, r in by_row.items()]
    gap_rows = [[n, f"{g[0]:.3f}", f"{g[1]:.3f}"] for n, g in gaps if g is not None]
    text = (
        f"# {title or sweep_dir.name}\n\n{describe(by_row)}\n\nPercent; mean ± sample sd over seeds; `mining_` = the "
        f"training questions themselves (their labels unused); p: paired permutation test against {ref} on "
        f"per-question values averaged over seeds.\n\n{group_table(by_row)}\n"
    )
    if gap_rows:
        head = ["row", "first quarter of steps", "last quarter"]
        text += (
            "\n## Soft-mask vs hard-top-k loss (answer NLL per token, hard minus soft)\n\n"
            + markdown_table(head, gap_rows)
            + "\n"
        )
    (sweep_dir / "table.md").write_text(text)
    _csv(sweep_dir / "table.csv", by_row)
    write_json(sweep_dir / "summary.json", summary_rows(by_row), indent=2)
    _plots(sweep_dir, by_row)
    return sweep_dir / "table.md"


def _csv(path: Path, by_row: Runs) -> None:
    cols = [*metric_columns(by_row), "seconds"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "seeds", *(f"{m}_{s}" for m in cols for s in ("mean", "sd"))])
        for name, runs in by_row.items():
            cells: list[Any] = []
            for m in cols:
                s = summarise(runs, m)
                cells += ["", ""] if s is None else [round(s[0], 5), round(s[1], 5)]
            w.writerow([name, len(runs), *cells])


def gap_summary(runs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """Mean hard - soft loss over the first and the last quarter of training (all seeds)."""
    pairs = [(s["step"], s["hard_loss"] - s["loss"]) for r in runs for s in r["steps"] if s.get("hard_loss") is not None]
    if not pairs:
        return None
    last = max(p[0] for p in pairs)
    q = max(last // 4, 1)
    early = [g for st, g in pairs if st <= q]
    late = [g for st, g in pairs if st > last - q]
    return sum(early) / len(early), sum(late) / len(late)


def _plots(out: Path, by_row: Runs) -> None:
    """recall.png (R@k and bridge R@k per row, each seed a dot) and, where objectives log the hard
    top-k loss, loss_gap.png (soft-mask vs hard-top-k answer NLL over training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, names = test_k(by_row), list(by_row)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, (f"R@{k}", f"bridge_R@{k}"), strict=True):
        stats = [summarise(by_row[n], metric) for n in names]
        ax.bar(
            names,
            [0.0 if s is None else s[0] for s in stats],
            yerr=[0.0 if s is None else s[1] for s in stats],
            capsize=3,
            color=["#999" if n == "zero-shot" else "#3a7" for n in names],
        )
        for i, n in enumerate(names):
            seeds = [v for v in (value(r, metric) for r in by_row[n]) if v is not None]
            ax.scatter([i] * len(seeds), seeds, s=10, color="#222", zorder=3)
        ax.set(ylabel=f"held-out {metric} (mean ± sd over seeds)", ylim=(0, 1), title=f"{out.name}: {metric}")
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall.png", dpi=110)
    plt.close(fig)

    gap_rows = {n: runs for n, runs in by_row.items() if any(s.get("hard_loss") is not None for r in runs for s in r["steps"])}
    if not gap_rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [3, 3, 2]})
    axes[0].set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])  # up to 20 rows, each its own colour
    for name, runs in gap_rows.items():
        steps = sorted({s["step"] for r in runs for s in r["steps"]})
        soft = [_mean_at(runs, step, "loss") for step in steps]
        hard = [_mean_at(runs, step, "hard_loss") for step in steps]
        line = axes[0].plot(steps, _smooth(soft), label=f"{name} soft")[0]
        axes[0].plot(steps, _smooth(hard), linestyle="--", color=line.get_color())
        axes[1].plot(steps, _smooth([h - s for h, s in zip(hard, soft, strict=True)]), label=name, color=line.get_color())
    axes[0].set(xlabel="step", ylabel="answer NLL per token", title="soft mask (solid) vs hard top-k (dashed)")
    axes[1].axhline(0, color="#888", lw=0.8)
    axes[1].set(xlabel="step", ylabel="hard - soft loss", title="soft-train / hard-inference gap (moving avg 4)")
    axes[1].legend(fontsize=7)
    late = {n: g[1] for n, g in ((n, gap_summary(r)) for n, r in gap_rows.items()) if g is not None}
    axes[2].barh(list(late), list(late.values()), color="#a63")
    axes[2].axvline(0, color="#888", lw=0.8)
    axes[2].set(xlabel="hard - soft, last quarter of steps", title="gap at the end of training")
    axes[2].tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss_gap.png", dpi=110)
    plt.close(fig)


def _mean_at(runs: list[dict[str, Any]], step: int, key: str) -> float:
    vals = [s[key] for r in runs for s in r["steps"] if s["step"] == step and s.get(key) is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _smooth(values: list[float], window: int = 4) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if v == v]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out
