"""A sweep folder's report files: table.md, table.csv, summary.json and the plots (recall.png,
loss_gap.png); the tables and statistics themselves are in :mod:`.report`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..evaluation.tables import markdown_table
from ..jsonsafe import write_json
from .report import (
    Runs,
    _config,
    describe,
    group_table,
    load_results,
    metric_columns,
    reference_row,
    start_table,
    summarise,
    summary_rows,
    test_k,
    value,
)


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
    against_start = start_table(by_row)
    if against_start:
        text += f"\n## Against the start, with the positive control\n\n{against_start}\n"
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
    plots(sweep_dir, by_row)
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


def plots(out: Path, by_row: Runs) -> None:
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
