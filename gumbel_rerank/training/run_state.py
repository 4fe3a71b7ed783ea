"""What one training run holds (:class:`Run`) and how it is built: data, models, the objective, the
optimizer and the generators (:func:`setup`), restored from a checkpoint on resume (:func:`restore`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import devices, objectives
from ..config import Config, ConfigError, dump
from ..data import Example, load_splits, split_validation
from ..objectives import TeacherCache
from ..readers import build_reader
from ..readers.base import Reader
from ..rerankers import Reranker
from . import checkpoint, run_folder
from .selection import Selector
from .stabilize import StartAnchor, restrict_trainable

log = logging.getLogger(__name__)


def check_data(cfg: Config, train: list[Example], held_out: list[Example]) -> None:
    """Data problems that must stop a run before any model loads (the objective's own precondition)."""
    objectives.check(cfg, train)


@dataclass
class TrainResult:
    run_dir: Path
    before: dict[str, Any]
    after: dict[str, Any]
    seconds_per_step: float
    skipped_steps: int
    held_out_scores: list[list[float]]  # the trained reranker's scores of the held-out questions
    selection: dict[str, Any] | None = None  # train.select's pick and how well it picked (report.json)
    p_values: dict[str, float] | None = None  # per metric: paired permutation test, before vs after, per question


class NonFiniteLossError(ValueError):
    """Too many steps with a non-finite loss: the run stops instead of training on garbage."""


def _accelerator(cfg: Config) -> Any:
    """accelerate's process group (one process unless launched with ``accelerate launch``/``torchrun``),
    with the trackers of ``train.report_to``."""
    import importlib.util

    from accelerate import Accelerator, DistributedDataParallelKwargs

    missing = [t for t in cfg.train.report_to if importlib.util.find_spec(t) is None]
    if missing:
        raise ConfigError(
            f"train.report_to names {missing}, not installed: pip install {' '.join(missing)} "
            "(or pip install 'gumbel-rerank[track]' for tensorboard)"
        )
    # bi-encoders leave the pooler unused (find_unused_parameters); auto = CUDA when present, else the CPU
    acc = Accelerator(
        cpu=devices.pick(cfg.train.device).type == "cpu",  # accelerate's multi-CPU (gloo) mode needs cpu=True
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=list(cfg.train.report_to) or None,
        project_dir=cfg.train.out_dir,
    )
    if cfg.train.batch_size % acc.num_processes:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the {acc.num_processes} "
            "processes (each takes an equal share of every batch)"
        )
    if cfg.train.report_to:
        flat = {
            f"{s}.{k}": v if isinstance(v, int | float | str | bool) else str(v)
            for s, keys in cfg.to_dict().items()
            for k, v in keys.items()
        }
        acc.init_trackers(Path(cfg.train.out_dir).name or "run", config=flat)
    return acc


@dataclass
class Run:
    """Everything one training run holds between its steps."""

    cfg: Config
    acc: Any
    run_dir: Path
    train_set: list[Example]
    held_out: list[Example]
    reranker: Reranker
    reader: Reader
    objective: Any
    anchor: StartAnchor | None
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    noise: torch.Generator  # the Gumbel draws' (and the batch noise seeds') generator
    order: torch.Generator  # the data order's generator
    selector: Selector | None
    before: dict[str, Any] | None
    queue: list[int] = field(default_factory=list)  # question indices still to come in this epoch
    first_step: int = 0
    skipped: int = 0
    resumed: bool = False
    lock: run_folder.RunLock | None = None  # the run folder's, held by the main process until the run ends

    @property
    def main(self) -> bool:
        return bool(self.acc.is_main_process)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def setup(
    cfg: Config,
    reranker: Reranker | None,
    reader: Reader | None,
    teachers: TeacherCache | None,
    before: dict[str, Any] | None,
    resume: bool,
    splits: tuple[list[Example], list[Example]] | None,
    overwrite: bool = False,
) -> Run:
    """Data, models, objective, optimizer and generators; restored from the last checkpoint on resume.
    The data is read and the run folder claimed (:func:`run_folder.claim`) before any model loads."""
    objectives.check(cfg)
    train_set, held_out = splits if splits is not None else load_splits(cfg.data)
    train_set, validation = split_validation(train_set, cfg.data.num_val)
    check_data(cfg, train_set, held_out)
    main = int(os.environ.get("RANK", "0")) == 0  # accelerate/torchrun set RANK; the trackers write into out_dir
    lock = run_folder.claim(cfg.train.out_dir, resume=resume, overwrite=overwrite) if main else None
    try:
        run = _build(cfg, reranker, reader, teachers, before, resume, train_set, validation, held_out)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    run.lock = lock
    return run


def _build(
    cfg: Config,
    reranker: Reranker | None,
    reader: Reader | None,
    teachers: TeacherCache | None,
    before: dict[str, Any] | None,
    resume: bool,
    train_set: list[Example],
    validation: list[Example],
    held_out: list[Example],
) -> Run:
    acc = _accelerator(cfg)
    run_dir = Path(cfg.train.out_dir)
    ckpt = checkpoint.latest(run_dir, checkpoint.RESUMABLE) if resume else None
    if resume and ckpt is None:
        raise ConfigError(
            f"resume: {run_dir} holds no intact checkpoint (train.checkpoint_every writes them); "
            "drop --resume to start this run from the beginning"
        )
    if ckpt is not None:
        checkpoint.check_resumable(cfg, run_dir)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump(cfg))
    reranker = reranker or Reranker.from_config(cfg.reranker)
    reranker.to(acc.device)
    reader = reader or build_reader(cfg.reader, device=acc.device)
    objective = objectives.build(cfg, teachers or TeacherCache(cfg.train.teacher_cache or None))
    torch.manual_seed(cfg.train.seed)  # the reranker's dropout; everything else takes explicit generators
    anchor = (
        StartAnchor(reranker, weight=cfg.objective.kl_to_start, temperature=cfg.objective.temperature_score)
        if cfg.objective.kl_to_start > 0
        else None
    )  # taken before a resume loads later weights: the true start
    if cfg.train.train_layers:
        restrict_trainable(reranker, cfg.train.train_layers)
        if reranker.prefix_cache is None:  # a sweep may hand one over, filled by its earlier rows
            reranker.keep_frozen_prefix(cfg.eval.prefix_cache_mb)  # evaluations run only the trainable top
    trainable = [p for p in reranker.parameters() if p.requires_grad]
    tr = cfg.train
    selector = (
        Selector(
            run_dir,
            reader,
            validation,
            held_out,
            k=cfg.objective.k,
            patience=tr.patience,
            batch_size=cfg.eval.batch_size,
            save=acc.is_main_process,
        )
        if tr.eval_every
        else None
    )
    run = Run(
        cfg,
        acc,
        run_dir,
        train_set,
        held_out,
        reranker,
        reader,
        objective,
        anchor,
        trainable,
        torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay),
        torch.Generator().manual_seed(cfg.train.seed),
        torch.Generator().manual_seed(cfg.train.seed + 1),
        selector,
        before,
    )
    if ckpt is not None:
        restore(run, ckpt)
    return run


def restore(run: Run, ckpt: Path) -> None:
    """Weights, optimizer, generators, data queue and selection state of checkpoint ``ckpt``."""
    checkpoint.load_reranker_weights(ckpt, run.reranker)
    state = checkpoint.load_optimizer(ckpt, run.optimizer)
    rng = checkpoint.load_state_tensors(ckpt)
    run.noise.set_state(rng["noise"])
    run.order.set_state(rng["order"])
    torch.set_rng_state(rng["torch"])
    run.first_step, run.skipped, run.queue = state["step"], int(state.get("skipped", 0)), state["queue"]
    run.before, run.resumed = state.get("before"), True
    if run.selector is not None:
        run.selector.restore_state(state.get("selection") or {})
    log.warning("resuming %s from %s (step %d)", run.run_dir, ckpt.name, run.first_step)
