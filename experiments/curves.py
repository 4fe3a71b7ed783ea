"""The reproduction's two curves, from the committed result files (no training here).

- **Held-out curve** (``results/<group>/heldout_curve.png``, ``heldout_curve.md``, for each group of
  plan.yaml with trained rows): held-out R@5 and the validation answer NLL against step, mean over
  seeds, for G-Rerank and the rivals of the group: has training levelled off, and did the label-free
  selection keep a checkpoint the schedule then left?
- **Learning curve** (``results/learning_curve.png``, ``learning_curve.md``): held-out R@5 and
  bridge R@5 of the selected checkpoint against the number of training questions, from the groups
  ``hotpotqa-train32``, ``hotpotqa-train100`` and ``hotpotqa`` (300), all scored on the same 159
  held-out questions (``data.eval_start``).
- **Learning rate chosen without labels** (``results/lr_choice.md``): for each objective, seed 0 at
  the plan's LR (``hotpotqa``) and at 10x (``hotpotqa-lr1e-4``); the LR whose selected checkpoint
  has the lower validation answer NLL is chosen (no gold label is read), then its held-out recall is
  shown, with the paired p against G-Rerank at G-Rerank's own chosen LR. Any grid group
  (rows ``<objective>-lr<LR>``, e.g. ``hotpotqa-grid``) gets the same choice over its LRs in
  ``results/<group>/lr_choice.md``, with the chosen rows' change against the start and the
  supervised row (at its own chosen LR) as the positive control.

    python experiments/curves.py        # also run by `python experiments/run.py --report`
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from gumbel_rerank.comparison.grid import LR_TIE, choose_lr, grid_choice, load_grid
from gumbel_rerank.comparison.plan import load_plan
from gumbel_rerank.comparison.report import (
    Runs,
    load_results,
    markdown_table,
    paired_p,
    start_table,
    summarise,
)
from gumbel_rerank.objectives import OBJECTIVES, title

HERE = Path(__file__).parent
CURVE_GROUPS = {32: "hotpotqa-train32", 100: "hotpotqa-train100", 300: "hotpotqa"}
METRICS = ("R@5", "bridge_R@5")
LearningRows = dict[str, dict[int, dict[str, tuple[float, float, int]]]]  # objective -> size -> metric -> mean, sd, seeds


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def heldout_points(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Mean of ``key`` over seeds at each evaluated step that every seed has."""
    per_seed = [{p["step"]: p[key] for p in r.get("curve") or [] if key in p} for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    return steps, [_mean([s[step] for s in per_seed]) for step in steps]


HELD_OUT_KEYS = ("source", "shuffle", "seed", "min_docs", "eval_start", "num_eval")  # what picks the held-out questions


def held_out_of(config: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(config["data"].get(k) for k in HELD_OUT_KEYS)


def trained_on(config: dict[str, Any]) -> int:
    """Training questions of a run: num_train minus the validation ones."""
    return int(config["data"]["num_train"]) - int(config["data"].get("num_val") or 0)


def last_step(runs: list[dict[str, Any]], metric: str) -> tuple[float, float, int] | None:
    """:func:`summarise` of the held-out ``metric`` at each run's last evaluated step (None unless every run has it)."""
    last = [{"held_out": {metric: r["curve"][-1].get(f"held_out_{metric}")}} for r in runs if r.get("curve")]
    s = summarise(last, metric)
    return s if s is not None and s[2] == len(runs) else None


def learning_rows(results: Path, at: str = "selected") -> LearningRows:
    """objective -> training questions -> metric -> (mean, sd, seeds), for the groups that have results
    (the size is read from each run's config, not assumed from the group's name). Every point is scored
    on the held-out questions of the largest group's first run; a run scored on others is left out.
    ``at``: ``"selected"``, the label-free selected checkpoint (the run's ``held_out``), or ``"last"``,
    the last step of the schedule (no selection; from the run's held-out curve)."""
    out: LearningRows = {}
    reference = None
    for _, group in sorted(CURVE_GROUPS.items(), reverse=True):
        if not (results / group / "runs").is_dir():
            continue
        for name, runs in load_results(results / group).items():
            trained = [r for r in runs if r.get("seed") is not None and r.get("config")]
            if not trained:
                continue
            reference = reference or held_out_of(trained[0]["config"])
            sizes = {trained_on(r["config"]) for r in trained}
            if name == "zero-shot" or len(sizes) != 1 or any(held_out_of(r["config"]) != reference for r in trained):
                continue
            n = sizes.pop()
            for m in METRICS:
                s = summarise(trained, m) if at == "selected" else last_step(trained, m)  # mean, sample sd, seeds
                if s is not None:
                    out.setdefault(name, {}).setdefault(n, {})[m] = (100 * s[0], 100 * s[1], s[2])
    return out


def learning_table(rows: LearningRows, zero: dict[str, float]) -> str:
    sizes = sorted({n for by_n in rows.values() for n in by_n})
    head = ["objective", *(f"{m} @ {n} q" for m in METRICS for n in sizes)]
    table = [["zero-shot", *(f"{100 * zero[m]:.1f}" for m in METRICS for _ in sizes)]]
    for name, by_n in rows.items():
        cells = [title(name)]
        for m in METRICS:
            for n in sizes:
                v = by_n.get(n, {}).get(m)
                sd = "" if v is None or v[2] == 1 else f" ± {v[1]:.1f}"  # one seed has no sd (as in report.cell)
                cells.append("" if v is None else f"{v[0]:.1f}{sd} ({v[2]})")
        table.append(cells)
    return markdown_table(head, table)


LR_GROUPS = {"1e-5": "hotpotqa", "1e-4": "hotpotqa-lr1e-4"}
# A grid group is any group whose rows are <objective>-lr<LR> (make_configs.py); the cross grid's rows at 1e-4 are
# hotpotqa-cross-fresh's, all seeds (its results folder's grid_base.json, grid.load_grid); the LR choice reads seed 0
GRID_LRS = ("1e-4", "3e-5", "1e-5")


def lr_choice(results: Path) -> list[dict[str, Any]]:
    """Per objective present at seed 0 in both LR groups: each LR's selected validation NLL, the LR with
    the lower one, and both runs (the chosen one's ``held_out`` metrics are read only after the choice)."""
    seed0: dict[str, dict[str, dict[str, Any]]] = {}
    for lr, group in LR_GROUPS.items():
        if (results / group / "runs").is_dir():
            for name, runs in load_results(results / group).items():
                for r in runs:
                    if r.get("seed") == 0 and r.get("selection"):
                        seed0.setdefault(name, {})[lr] = r
    rows = []
    for name, by_lr in seed0.items():
        if len(by_lr) == len(LR_GROUPS):
            nll = {lr: float(r["selection"]["selected_val_loss"]) for lr, r in by_lr.items()}
            chosen = choose_lr(nll)
            rows.append({"row": name, "val_nll": nll, "lr": chosen, "runs": by_lr})
    return rows


def lr_table(rows: list[dict[str, Any]]) -> str:
    lrs = list(LR_GROUPS)
    head = ["objective", *(f"val NLL @ {lr}" for lr in lrs), "chosen LR"]
    head += [f"R@5 @ {lr}" for lr in lrs] + ["R@5 chosen", "bridge R@5 chosen", "p R@5 vs G-Rerank (chosen)"]
    table = []
    chosen = {r["row"]: r["runs"][r["lr"]] for r in rows}
    ref = chosen.get("gumbel")
    for r in rows:
        p = None if ref is None or r["row"] == "gumbel" else paired_p([ref], [chosen[r["row"]]], "R@5")
        cells = [title(r["row"]), *(f"{r['val_nll'][lr]:.3f}" for lr in lrs), r["lr"]]
        cells += [f"{100 * r['runs'][lr]['held_out']['R@5']:.1f}" for lr in lrs]
        cells += [f"{100 * chosen[r['row']]['held_out'][m]:.1f}" for m in METRICS]
        cells.append("" if p is None else f"{p:.2f}")
        table.append(cells)
    return markdown_table(head, table)


def grid_text(group: str, by_row: Runs, lrs: tuple[str, ...]) -> str:
    """results/<grid group>/lr_choice.md: the label-free LR choice, then the chosen rows against the start."""
    rows, chosen = grid_choice(by_row)
    head = ["objective", *(f"val NLL @ {lr}" for lr in lrs), "chosen LR (selected step)"]
    table = [
        [
            title(r["row"]),
            *(f"{r['val_nll'][lr]:.3f}" if lr in r["val_nll"] else "not run" for lr in lrs),
            f"{r['lr']} ({r['steps']})",
        ]
        for r in rows
    ]
    incomplete = [title(r["row"]) for r in rows if len(r["val_nll"]) < len(lrs)]
    start = chosen.get("zero-shot", [{}])[0].get("per_question", {})
    questions = f" ({len(next(iter(start.values())))} held-out questions)" if start else ""
    return (
        f"# {group}: each objective at the learning rate its own validation answer NLL prefers\n\n"
        f"Generated by `python experiments/curves.py` from results/{group}. The LR is chosen on seed 0, which "
        "every LR ran, by the selected checkpoint's answer NLL on the 30 label-free validation questions (no "
        f"gold label is read; within {LR_TIE:g} nats per token a tie, which the higher LR wins); "
        "the held-out numbers below, every seed the chosen LR has run, are read after the choice."
        + (f" Not every LR has run yet for: {', '.join(incomplete)} (chosen among those that have)." if incomplete else "")
        + "\n\n"
        + markdown_table(head, table)
        + f"\n\n## The chosen rows against the start{questions}\n\n"
        + start_table(chosen)
        + "\n\n"
        + start_table(chosen, more=True)
        + "\n"
    )


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style(name: str) -> dict[str, Any]:
    """One colour per objective in every figure (G-Rerank black and thicker), whichever rows it shows."""
    if name == "gumbel":
        return {"lw": 2.5, "color": "black"}
    names = [n for n in OBJECTIVES if n != "gumbel"]
    return {"lw": 1.2, "color": f"C{names.index(name) % 10}" if name in names else "grey"}


def with_curves(by_row: Runs) -> Runs:
    """The trained rows and, of each, the runs that have a held-out curve."""
    trained = {n: [r for r in runs if r.get("curve")] for n, runs in by_row.items() if n != "zero-shot"}
    return {n: runs for n, runs in trained.items() if runs}


def heldout_table(by_row: Runs) -> str:
    """Held-out R@5 (percent, mean over seeds) at each evaluated step, one line per trained row, and the
    step(s) its label-free selection kept (one per seed)."""
    trained = with_curves(by_row)
    curves = {n: dict(zip(*heldout_points(runs, "held_out_R@5"), strict=True)) for n, runs in trained.items()}
    steps = sorted({s for c in curves.values() for s in c})
    rows = []
    for name, curve in curves.items():
        kept = [str((r.get("selection") or {}).get("selected_step", "")) for r in trained[name]]
        cells = [f"{100 * curve[s]:.1f}" if s in curve else "" for s in steps]
        rows.append([title(name), str(len(trained[name])), *cells, ", ".join(k for k in kept if k)])
    return markdown_table(["objective", "seeds", *(f"step {s}" for s in steps), "selected step"], rows)


def plot_heldout(by_row: Runs, out: Path) -> Path | None:
    trained = with_curves(by_row)
    if not trained:
        return None
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in trained.items():
        seeds = f"{len(runs)} seed" + ("" if len(runs) == 1 else "s")
        a.plot(*heldout_points(runs, "held_out_R@5"), "o-", label=f"{title(name)} ({seeds})", **style(name))
        b.plot(*heldout_points(runs, "val_loss"), "o-", label=title(name), **style(name))
    a.set(xlabel="step", ylabel="held-out R@5 (gold labels, report only)", title="mean over seeds")
    b.set(xlabel="step", ylabel="validation answer NLL, hard top-5 (label-free)")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_learning(rows: LearningRows, zero: dict[str, float], out: Path, last: LearningRows | None = None) -> Path:
    """The rows measured at more than one training-set size (the others are single points, in the table):
    the selected checkpoint solid, the last step (``last``) dashed in the same colour."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 4.4))
    curves = {name: by_n for name, by_n in rows.items() if len(by_n) > 1}
    for ax, m in zip(axes, METRICS, strict=True):
        for name, by_n in curves.items():
            ns = sorted(n for n in by_n if m in by_n[n])
            means, sds = [by_n[n][m][0] for n in ns], [by_n[n][m][1] for n in ns]
            ax.errorbar(ns, means, yerr=sds, marker="o", capsize=3, label=title(name), **style(name))
            tail = (last or {}).get(name, {})
            ns_last = sorted(n for n in tail if m in tail[n])
            if len(ns_last) > 1:
                ax.plot(ns_last, [tail[n][m][0] for n in ns_last], "s--", ms=4, alpha=0.7, **style(name))
        ax.axhline(100 * zero[m], color="grey", ls=":", label="zero-shot")
        ax.set(xscale="log", xlabel="training questions", ylabel=f"held-out {m} (%)")
        ax.minorticks_off()  # a log axis labels its minor ticks (3x10^1, 4x10^1, ...) over the sizes' own
        ax.set_xticks(list(CURVE_GROUPS), [str(n) for n in CURVE_GROUPS])
    handles, labels = axes[0].get_legend_handles_labels()
    if last:
        handles.append(plt.Line2D([], [], color="grey", ls="--", marker="s", ms=4))
        labels.append("last step (dashed)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_curves(results: str | Path = HERE / "results") -> list[Path]:
    """Both curves from whatever results exist; returns the files written."""
    results = Path(results)
    written: list[Path] = []
    for group in load_plan(HERE / "plan.yaml"):
        folder = results / group
        if not (folder / "runs").is_dir():
            continue
        by_row = load_results(folder)
        png = plot_heldout(by_row, folder / "heldout_curve.png")
        if png:
            (folder / "heldout_curve.md").write_text(
                f"# Held-out R@5 against step ({group})\n\n"
                f"Generated by `python experiments/curves.py` from results/{group}. Percent, mean over seeds, on "
                "the group's held-out questions (gold labels, report only: nothing was chosen by them). The "
                "selected step is the checkpoint with the lowest validation answer NLL (label-free), which the "
                "group's table reports.\n\n" + heldout_table(by_row) + "\n"
            )
            written += [png, folder / "heldout_curve.md"]
    rows, last = learning_rows(results), learning_rows(results, at="last")
    zero_file = results / "hotpotqa" / "runs" / "zero-shot.json"
    if rows and zero_file.exists():
        import json

        zero = json.loads(zero_file.read_text())["held_out"]
        text = (
            "# Learning curve: held-out recall against training questions (HotpotQA)\n\n"
            "Generated by `python experiments/curves.py` from results/hotpotqa-train32, -train100 and hotpotqa.\n"
            "Percent; mean ± sd over seeds (seeds in brackets; a single seed has no sd); the same 159 held-out "
            "questions and 150 steps for every size. Each size validates on its own 30 questions (the 30 after "
            "its training questions in the shuffled file), so validation NLLs are not comparable across sizes. "
            "The figure (learning_curve.png) shows the rows measured at more than one size: solid the selected "
            "checkpoint, dashed the last step.\n\n"
            "## The checkpoint picked by validation answer NLL (label-free; what the group tables report)\n\n"
            + learning_table(rows, zero)
            + "\n\n## The last step of the schedule (no selection; from each run's held-out curve)\n\n"
            + learning_table(last, zero)
            + "\n"
        )
        (results / "learning_curve.md").write_text(text)
        written += [results / "learning_curve.md", plot_learning(rows, zero, results / "learning_curve.png", last)]
    for folder in sorted(d for d in results.iterdir() if (d / "runs").is_dir()):
        by_row = load_grid(folder)
        if grid_choice(by_row)[0]:  # a grid group: rows <objective>-lr<LR>
            (folder / "lr_choice.md").write_text(grid_text(folder.name, by_row, GRID_LRS))
            written.append(folder / "lr_choice.md")
    choice = lr_choice(results)
    if choice:
        (results / "lr_choice.md").write_text(
            "# Each objective at the learning rate its own validation answer NLL prefers (HotpotQA, seed 0)\n\n"
            "Generated by `python experiments/curves.py` from results/hotpotqa and results/hotpotqa-lr1e-4. "
            "The LR is chosen by the selected checkpoint's validation answer NLL (label-free, 30 training-side "
            "questions); held-out recall (percent, 159 questions) is read after the choice. p: paired "
            "permutation test on per-question R@5 against G-Rerank at its own chosen LR.\n\n" + lr_table(choice) + "\n"
        )
        written.append(results / "lr_choice.md")
    return written


if __name__ == "__main__":
    for path in write_curves():
        print(path)
