"""A sweep: rows (one training config each) x seeds, one resumable result file per (row, seed).

Layout of a sweep folder (``compare`` makes one; ``experiments/`` holds one per group)::

    runs/zero-shot.json           the starting reranker, evaluated once
    runs/<row>.seed<s>.json       one file per (row, seed), written atomically when its run ends
    table.md, table.csv, *.png    :func:`gumbel_rerank.comparison.report.write_report`

Every row must share the data, the reader, the reranker and the eval config (the zero-shot row and
the paired tests need the same questions and the same start); rows differ in the objective and its
settings. Rows share one loaded reader (with its doc cache), one on-disk teacher cache and one memo
of the reader's generated answers (keyed by question and doc set, so two rankings with the same
top-k reuse one generation). A (row, seed) whose result file exists is skipped, so an interrupted
sweep continues where it stopped; a row cut short continues from its last checkpoint (every
``train.checkpoint_every`` steps, or with 0 there every ``train.eval_every``), with the weights, log
and selection an uninterrupted run has.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import devices, objectives
from ..config import Config, ConfigError
from ..config import load as load_config
from ..data import Example, load_splits
from ..evaluation.evaluate import score_all
from ..jsonsafe import write_json
from ..objectives import OBJECTIVES, TeacherCache
from ..objectives.teachers import reader_fingerprint
from ..readers import build_reader
from ..readers.base import Reader
from ..rerankers import Reranker
from ..training import checkpoint
from ..training.loop import check_data, train
from .results import AnswerMemo, _result, _reuse, _steps_and_curve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    name: str  # the row's name in tables and result files
    cfg: Config


def row_order(rows: Sequence[Row]) -> list[Row]:
    """Objectives in registry order (``OBJECTIVES``), then any other rows (ablations) by name."""
    rank = {name: i for i, name in enumerate(OBJECTIVES)}
    return sorted(rows, key=lambda r: (rank.get(r.cfg.objective.name, len(rank)), r.name))


def check_rows(rows: Sequence[Row], where: str = "") -> list[Row]:
    """Refuse rows that do not share data, reader, reranker and eval, or name no registered objective."""
    if not rows:
        raise ConfigError(f"{where or 'the sweep'}: no rows")
    first = rows[0]
    for row in rows:
        objectives.check(row.cfg)
        for section in ("data", "reader", "reranker", "eval"):
            if getattr(row.cfg, section) != getattr(first.cfg, section):
                raise ConfigError(
                    f"{where}{row.name}.yaml: its {section} section differs from {first.name}.yaml; "
                    "every row of a sweep must share data, reader, reranker and eval"
                )
    return row_order(rows)


def load_group(group_dir: str | Path) -> list[Row]:
    """A folder of row configs (``<row>.yaml``), checked and in table order."""
    files = sorted(Path(group_dir).glob("*.yaml"))
    if not files:
        raise ConfigError(f"{group_dir}: no row configs (*.yaml)")
    return check_rows([Row(f.stem, load_config(f)) for f in files], f"{group_dir}/")


def starting_reranker(cfg: Config) -> Reranker:
    """The sweep's start; a cross-encoder's fresh head is the same on every rerun (a local RNG fork)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Reranker.from_config(cfg.reranker)


TIME_FILE = "sweep_time.json"  # in a row's run folder: its training seconds before the current start


def _resume_point(run_dir: Path) -> tuple[int | None, float]:
    """The step of the newest intact checkpoint a cut-short row left in ``run_dir`` (None: start afresh)
    and the row's seconds up to that checkpoint: those of earlier starts, counted to the checkpoint's
    write (what came after it is redone). Records this start's wall time for a later resume."""
    ckpt = checkpoint.latest(run_dir, checkpoint.RESUMABLE) if run_dir.is_dir() else None
    seconds, step = 0.0, None
    if ckpt is not None:
        state = ckpt / "trainer_state.json"  # written last
        step = int(json.loads(state.read_text())["step"])
        try:
            before = json.loads((run_dir / TIME_FILE).read_text())
            seconds = float(before["seconds"]) + max(state.stat().st_mtime - float(before["started"]), 0.0)
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: no readable %s; the row's seconds count from this start only", run_dir, TIME_FILE)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / TIME_FILE).write_text(json.dumps({"seconds": seconds, "started": time.time()}))
    return step, seconds


def run_group(
    rows: Sequence[Row],
    seeds: Sequence[int],
    out: str | Path,
    work: str | Path,
    *,
    reader: Reader | None = None,
    progress: bool = True,
    on_result: Callable[[str], None] | None = None,
    teacher_dir: str | Path | None = None,
    order: Sequence[str] = (),
    row_seeds: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Train every (row, seed) not yet in ``out/runs`` (run folders under ``work``); return ``out``.
    Every row runs ``seeds``, except those ``row_seeds`` names, which run theirs.
    Teachers are kept in ``train.teacher_cache``, else ``teacher_dir``, else ``work/teacher_cache``.
    Rows run in registry order (``row_order``) with the positive control (``supervised``) first, or
    exactly in ``order`` (row names) where given."""
    rows = check_rows(rows)
    if order:
        rows = sorted(rows, key=lambda r: list(order).index(r.name) if r.name in order else len(order))
    else:  # the positive control first: a group cut short still says whether its setting can separate anything
        rows = sorted(rows, key=lambda r: r.cfg.objective.name != "supervised")
    cfg0 = rows[0].cfg
    out, work = Path(out), Path(work)
    runs = out / "runs"
    train_set, held_out = load_splits(cfg0.data)
    for row in rows:
        check_data(row.cfg, train_set, held_out)
    reader = reader or build_reader(cfg0.reader, device=devices.pick(cfg0.train.device))
    memo = AnswerMemo(reader, cfg0)
    teachers = TeacherCache(cfg0.train.teacher_cache or teacher_dir or work / "teacher_cache")
    start = starting_reranker(cfg0)
    zero = runs / "zero-shot.json"
    setup = {k: v for k, v in cfg0.to_dict().items() if k in ("data", "reader", "reranker", "eval")}
    weights = reader_fingerprint(reader)  # the config names an adapter by path: this sees a remade one
    if zero.exists():
        stored = _reuse(zero, setup, "the group's data, reader, reranker or eval", key="setup")
        if stored.get("reader_fingerprint", weights) != weights:  # results made before it was recorded: not checked
            raise ConfigError(
                f"{zero} was made with other reader weights than {cfg0.reader.model}"
                f"{' + ' + cfg0.reader.adapter if cfg0.reader.adapter else ''} has now (fingerprint "
                f"{stored['reader_fingerprint']}, now {weights}; a remade reader adapter?): restore those weights, "
                f"or move {out} away to rerun the whole group"
            )
        before, before_scores = stored["held_out"], stored.get("held_out_scores")
        if before_scores is not None and "answer_nll" in stored.get("per_question", {}):
            memo.remember(held_out, before_scores, cfg0.objective.k, stored["per_question"]["answer_nll"])
    else:
        res = _result(
            held_out,
            score_all(start, held_out, batch_size=cfg0.eval.batch_size),
            train_set,
            score_all(start, train_set, batch_size=cfg0.eval.batch_size),
            cfg0,
            memo,
        )
        res.update(row="zero-shot", seed=None, seconds=0.0, steps=[], config=None, setup=setup, reader_fingerprint=weights)
        write_json(zero, res)
        before, before_scores = res["held_out"], res["held_out_scores"]
        if on_result:
            on_result("zero-shot")
    kept_bottom: Any = None  # a PrefixCache, once a row made one
    row_seeds = row_seeds or {}
    every_seed = list(dict.fromkeys([*seeds, *sorted({s for these in row_seeds.values() for s in these})]))
    for seed in every_seed:  # every row gets seed 0 before any row gets seed 1
        for row in rows:
            if seed not in row_seeds.get(row.name, seeds):
                continue
            path = runs / f"{row.name}.seed{seed}.json"
            if path.exists():
                _reuse(path, row.cfg.to_dict(), f"{row.name}.yaml")
                continue
            run_dir = work / f"{row.name}.seed{seed}"
            cfg = dataclasses.replace(
                row.cfg,
                train=dataclasses.replace(
                    row.cfg.train,
                    seed=seed,
                    out_dir=str(run_dir),
                    # checkpoints (they keep the selection's state too) so that a row cut short by the end of
                    # a sitting continues from its last one: the row's own cadence, else at every validation
                    checkpoint_every=row.cfg.train.checkpoint_every or row.cfg.train.eval_every,
                ),
                # answers and the held-out answer NLL come from the shared memo
                eval=dataclasses.replace(row.cfg.eval, generate=False, answer_nll=False),
            )
            trained = copy.deepcopy(start)
            if kept_bottom is not None and cfg.eval.prefix_cache_mb > 0:  # what earlier rows kept (checked equal)
                trained.prefix_cache = kept_bottom.rebind(trained.encoder)
            resumed_from, seconds_before = _resume_point(run_dir)
            t0 = time.perf_counter()
            try:
                result = train(
                    cfg,
                    progress=progress,
                    reranker=trained,
                    reader=reader,
                    teachers=teachers,
                    before=before,
                    before_scores=before_scores if _fits(before_scores, held_out) else None,
                    resume=resumed_from is not None,
                    overwrite=True,  # the sweep's own row folder: a row cut short before its first checkpoint restarts
                )
            except ConfigError as err:
                if resumed_from is None:
                    raise
                raise ConfigError(f"{err}. To start row {row.name} seed {seed} again, move {run_dir} away") from None
            seconds = seconds_before + time.perf_counter() - t0
            kept_bottom = trained.prefix_cache or kept_bottom
            steps, curve = _steps_and_curve(run_dir)
            res = _result(
                held_out,
                result.held_out_scores,
                train_set,
                score_all(trained, train_set, batch_size=cfg.eval.batch_size),
                cfg,
                memo,
            )
            res.update(
                row=row.name,
                seed=seed,
                seconds=seconds,
                resumed_from_step=resumed_from,
                seconds_per_step=result.seconds_per_step,
                skipped_steps=result.skipped_steps,
                steps=steps,
                curve=curve,
                selection=result.selection,
                config=row.cfg.to_dict(),
            )
            write_json(path, res)
            if on_result:
                k = max(cfg.eval.ks)
                on_result(f"{row.name} seed {seed}: R@{k} {res['held_out'][f'R@{k}']:.3f} ({seconds:.0f} s)")
    return out


def _fits(scores: Any, examples: list[Example]) -> bool:
    """Stored scores (a result file's) that hold one number per doc of each question."""
    return (
        isinstance(scores, list)
        and len(scores) == len(examples)
        and all(
            isinstance(s, list) and len(s) == len(ex.docs) and all(isinstance(v, int | float) for v in s)
            for s, ex in zip(scores, examples, strict=True)
        )
    )
