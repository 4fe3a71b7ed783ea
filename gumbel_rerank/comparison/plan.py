"""A plan: ``plan.yaml`` (group -> seeds, some rows may have their own) over ``configs/<group>/*.yaml``,
run group by group with one reader per reader config (:func:`run_plan`; ``experiments/run.py`` is its
command line)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .. import devices
from ..config import ConfigError
from ..readers import build_reader
from ..readers.base import Reader
from .sweep import load_group, run_group

PLAN_FORMAT = (
    "must map each group name to a non-empty list of integer seeds, e.g. hotpotqa: [0, 1, 2], or to "
    "{seeds: [0], rows: {<row>: [0, 1, 2]}} where some rows get other seeds than the group's"
)


def _seeds(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(s, int) and not isinstance(s, bool) for s in value)


def load_plan_entries(path: str | Path) -> dict[str, tuple[list[int], dict[str, list[int]]]]:
    """``plan.yaml`` read once: group -> (its seeds, the rows that get other seeds -> theirs)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {PLAN_FORMAT}")
    out = {}
    for group, value in raw.items():
        if isinstance(value, dict):
            rows = value.get("rows", {})
            if not (
                set(value) <= {"seeds", "rows"}
                and _seeds(value.get("seeds"))
                and isinstance(rows, dict)
                and all(isinstance(r, str) and _seeds(s) for r, s in rows.items())
            ):
                raise ConfigError(f"{path}: group {group!r}: {PLAN_FORMAT}")
            out[str(group)] = (list(value["seeds"]), {r: list(s) for r, s in rows.items()})
        elif _seeds(value):
            out[str(group)] = (list(value), {})
        else:
            raise ConfigError(f"{path}: group {group!r}: {PLAN_FORMAT}")
    return out


def load_plan(path: str | Path) -> dict[str, list[int]]:
    """``plan.yaml``: group -> the seeds its rows run (:func:`load_plan_entries` also gives the rows that run
    others, e.g. a grid row whose LR its objective chose, which then gets every seed)."""
    return {group: seeds for group, (seeds, _) in load_plan_entries(path).items()}


def run_plan(
    experiments: str | Path,
    *,
    groups: Sequence[str] = (),
    results: str | Path | None = None,
    work: str | Path = "runs/experiments",
    progress: bool = True,
    max_seeds: int | None = None,
    on_result: Callable[[str], None] | None = None,
    after_group: Callable[[Path], None] | None = None,
    only_rows: Sequence[str] = (),
) -> list[Path]:
    """Run a plan folder's groups (``plan.yaml`` + ``configs/<group>/*.yaml``; all, or those named) in
    plan order, reusing one reader per reader config. ``max_seeds`` runs only each group's first seeds
    (a first pass over every group; rerun without it to add the rest). ``on_result`` hears of every
    finished run, ``after_group`` of every finished group's folder. ``only_rows`` (row names) runs only
    those rows of the chosen groups, exactly in that order."""
    root = Path(experiments)

    def first(seeds: list[int]) -> list[int]:
        return seeds[:max_seeds] if max_seeds else seeds

    entries = load_plan_entries(root / "plan.yaml")  # read once: the groups' seeds and the rows' own
    plan = {g: first(seeds) for g, (seeds, _) in entries.items()}
    row_seeds = {g: {r: first(seeds) for r, seeds in by_row.items()} for g, (_, by_row) in entries.items()}
    unknown = [g for g in groups if g not in plan]
    if unknown:
        raise ConfigError(f"unknown group(s) {unknown}; plan.yaml has {', '.join(plan)}")
    chosen = [g for g in plan if not groups or g in groups]
    rows = {g: load_group(root / "configs" / g) for g in chosen}  # every config is checked before any model loads
    for group in chosen:
        unknown_rows = set(row_seeds[group]) - {row.name for row in rows[group]}
        if unknown_rows:
            raise ConfigError(f"plan.yaml: group {group} gives seeds to row(s) {sorted(unknown_rows)} it does not have")
    if only_rows:
        missing = [r for r in only_rows if not any(row.name == r for g in chosen for row in rows[g])]
        if missing:
            raise ConfigError(f"row(s) {missing} are in none of the groups {', '.join(chosen)}")
        rows = {g: [row for row in rs if row.name in only_rows] for g, rs in rows.items()}
        chosen = [g for g in chosen if rows[g]]
    results = Path(results) if results is not None else root / "results"
    readers: dict[Any, Reader] = {}
    done = []
    for group in chosen:
        reader_cfg = rows[group][0].cfg.reader
        if reader_cfg not in readers:
            readers.clear()  # one reader in memory at a time
            readers[reader_cfg] = build_reader(reader_cfg, device=devices.pick(rows[group][0].cfg.train.device))
        note = (lambda text, g=group: on_result(f"{g}/{text}")) if on_result else None
        if on_result:
            others = "".join(f", {r} x seeds {seeds}" for r, seeds in row_seeds[group].items())
            on_result(f"{group}: {len(rows[group])} rows x seeds {plan[group]}{others}")
        out = run_group(
            rows[group],
            plan[group],
            results / group,
            Path(work) / group,
            reader=readers[reader_cfg],
            progress=progress,
            on_result=note,
            # one cache for the plan: keyed by question content and reader weights, so the learning-curve
            # and other-LR groups read the main group's teachers and an adapted reader computes its own
            teacher_dir=Path(work) / "teacher_cache",
            order=only_rows,
            row_seeds=row_seeds[group],
        )
        done.append(out)
        if after_group:
            after_group(out)
    return done
