"""Grid groups (rows ``<objective>-lr<LR>``): each objective's LR chosen by its own validation answer NLL,
with the rows at one LR borrowed from a sibling group that ran the same configs (``grid_base.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.schema import top_k_set
from ..objectives import OBJECTIVES
from .report import Runs, defined_mean, load_results, ordered

GRID_BASE = "grid_base.json"  # in a grid group's folder: {"group": "<sibling group>", "lr": "<LR>"}
# Validation answer NLLs closer than this (nats per token) are a tie. The same checkpoint evaluated in two
# processes differs by float rounding (7e-6 for ADist's start in the cross grid, up to 2e-4 a question).
LR_TIE = 1e-3


def choose_lr(val_nll: dict[str, float]) -> str:
    """The LR whose selected checkpoint has the lowest validation answer NLL; within :data:`LR_TIE` of the
    lowest, the first in ``val_nll``'s order (the grids list their base LR first, the one already run
    with every seed). Two rows that both kept their start (step 0) are the same reranker: a tie."""
    best = min(val_nll.values())
    return next(lr for lr, nll in val_nll.items() if nll <= best + LR_TIE)


def load_grid(sweep_dir: str | Path) -> Runs:
    """:func:`load_results`, plus, for a grid group (rows ``<objective>-lr<LR>``) whose folder holds a
    ``grid_base.json``, the runs of the sibling group it names as the grid's rows at its LR, every seed of
    each row that has seed 0: a grid whose config at that LR is that group's (experiments/make_configs.py)
    does not run those rows twice, and an objective whose chosen LR is the base's has its seeds there.
    The LR choice reads seed 0 only (:func:`grid_choice`). A row the grid ran itself wins."""
    sweep_dir = Path(sweep_dir)
    by_row = load_results(sweep_dir)
    path = sweep_dir / GRID_BASE
    if not path.is_file():
        return by_row
    base = json.loads(path.read_text())
    group, lr = (base.get("group"), base.get("lr")) if isinstance(base, dict) else (None, None)
    if not (isinstance(group, str) and isinstance(lr, str) and group and Path(group).name == group):
        raise ValueError(f'{path}: expected {{"group": "<a sibling group folder>", "lr": "<LR>"}}, got {base!r}')
    start = by_row.get("zero-shot", [None])[0]
    for name, runs in load_results(sweep_dir.parent / group).items():
        if name != "zero-shot" and _seed_0(runs) and f"{name}-lr{lr}" not in by_row:
            by_row[f"{name}-lr{lr}"] = [_start_values(r, start) for r in sorted(runs, key=lambda r: r["seed"])]
    return ordered(by_row)


def _seed_0(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The seed-0 run of a row, the one every LR of a grid ran (None if it has none)."""
    return next((r for r in runs if r.get("seed") == 0), None)


def _start_values(run: dict[str, Any], start: dict[str, Any] | None) -> dict[str, Any]:
    """``run`` (another group's, same questions) with the answer NLL of each question whose top-k docs are
    the start's taken from ``start``: the same docs, so the same value, but computed in another process it
    differs by float rounding (up to 2e-4 nats per token), all one way, and a paired test against the start
    finds that systematic (a row that kept its start: +0.000 with p 0.012). ``AnswerMemo.remember`` does this
    within a group."""
    k = (run.get("config") or {}).get("objective", {}).get("k")
    mine, theirs = run.get("per_question", {}).get("answer_nll"), (start or {}).get("per_question", {}).get("answer_nll")
    scores, start_scores = run.get("held_out_scores"), (start or {}).get("held_out_scores")
    if not (k and mine and theirs and scores and start_scores):
        return run
    if not len(mine) == len(theirs) == len(scores) == len(start_scores):
        return run
    nll = [t if top_k_set(s, k) == top_k_set(z, k) else m for m, t, s, z in zip(mine, theirs, scores, start_scores, strict=True)]
    mean = defined_mean(nll)
    held_out = (
        {**run["held_out"], "answer_nll": mean} if mean is not None and "answer_nll" in run["held_out"] else run["held_out"]
    )
    return {**run, "held_out": held_out, "per_question": {**run["per_question"], "answer_nll": nll}}


def grid_choice(by_row: Runs) -> tuple[list[dict[str, Any]], Runs]:
    """A grid group's rows are named ``<objective>-lr<LR>``: per objective, each LR's selected validation
    answer NLL (seed 0, label-free: every LR ran it) and the LR with the lowest (:func:`choose_lr`, ties to
    the higher LR); and the group as if it had one row per objective, the chosen LR's runs, all its seeds
    (with the zero-shot start), for :func:`start_table`."""
    found: dict[str, dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]] = {}  # objective -> LR -> (seed 0, runs)
    for name, runs in by_row.items():
        objective, sep, lr = name.rpartition("-lr")
        first = _seed_0(runs)
        if sep and objective in OBJECTIVES and first and first.get("selection"):
            found.setdefault(objective, {})[lr] = (first, runs)
    rows, chosen_runs = [], {"zero-shot": by_row["zero-shot"]} if "zero-shot" in by_row else {}
    for objective in sorted(found, key=list(OBJECTIVES).index):
        by_lr = dict(sorted(found[objective].items(), key=lambda kv: -float(kv[0])))
        nll = {lr: float(first["selection"]["selected_val_loss"]) for lr, (first, _) in by_lr.items()}
        lr = choose_lr(nll)
        first, runs = by_lr[lr]
        rows.append({"row": objective, "val_nll": nll, "lr": lr, "steps": first["selection"]["selected_step"]})
        chosen_runs[objective] = runs
    return rows, chosen_runs
