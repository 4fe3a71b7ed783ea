"""The one training loop: the reranker learns, the reader is frozen, the objective is pluggable."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import checkpoint, objectives
from .config import Config, ConfigError, dump
from .data import Example, load_splits, split_validation
from .evaluate import evaluate, score_all
from .jsonsafe import finite, write_json
from .objectives import Batch, TeacherCache
from .readers import build_reader
from .readers.base import Reader
from .rerankers import Reranker
from .runfiles import MetricsLog
from .schedule import set_lr
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


class NonFiniteLossError(ValueError):
    """Too many steps with a non-finite loss: the run stops instead of training on garbage."""


def _accelerator(cfg: Config) -> Any:
    """accelerate's process group (one process unless launched with ``accelerate launch``/``torchrun``)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # bi-encoders leave the pooler unused; the reader stays on the CPU, so the reranker does too
    acc = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if cfg.train.batch_size % acc.num_processes:
        raise ConfigError(
            f"train.batch_size={cfg.train.batch_size} must be a multiple of the {acc.num_processes} "
            "processes (each takes an equal share of every batch)"
        )
    return acc


@dataclass
class _Run:
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

    @property
    def main(self) -> bool:
        return bool(self.acc.is_main_process)


def train(
    cfg: Config,
    *,
    progress: bool = True,
    reranker: Reranker | None = None,
    reader: Reader | None = None,
    teachers: TeacherCache | None = None,
    before: dict[str, Any] | None = None,
    resume: bool = False,
    splits: tuple[list[Example], list[Example]] | None = None,
) -> TrainResult:
    """Train ``cfg``; the run directory gets config.yaml, metrics.jsonl, checkpoints, reranker/ and report.json.

    ``reranker``, ``reader`` and ``teachers`` skip loading or share them across runs (``compare``);
    ``before`` is the starting reranker's held-out evaluation when the caller already has it;
    ``splits`` (training, held-out questions) replace the data ``cfg.data`` describes.
    ``resume`` continues from the run directory's last checkpoint (weights, optimizer, data order,
    Gumbel noise and dropout RNG states), ending with the weights an uninterrupted run would have.
    Under ``accelerate launch``/``torchrun`` every process holds the reader and a replica of the
    reranker and takes an equal slice of each batch; gradients are averaged (DDP).
    """
    with torch.random.fork_rng(devices=[]):  # the run seeds the global RNG (dropout); the caller's state comes back
        return _train(_setup(cfg, reranker, reader, teachers, before, resume, splits), progress)


def _train(run: _Run, progress: bool) -> TrainResult:
    """The loop: evaluate the start, step, log, validate, checkpoint; then select and report."""
    cfg = run.cfg
    if run.before is None:
        run.before = evaluate(cfg, run.reranker, run.reader, run.held_out, progress=progress) if run.main else {}
    model = run.acc.prepare(run.reranker)  # DDP across processes; the same module in a single process
    model.train()
    t0, done = time.perf_counter(), run.first_step
    bar = tqdm(
        range(run.first_step, cfg.train.steps),
        desc=f"train {cfg.objective.name}",
        disable=not (progress and run.main),
        initial=run.first_step,
        total=cfg.train.steps,
    )
    resumed_at = run.first_step if run.resumed else None
    with MetricsLog(run.run_dir / "metrics.jsonl", write=run.main, keep_until=resumed_at) as log_file:
        if run.selector is not None and run.first_step == 0:  # the start is a candidate: selection can keep it
            log_file.write(run.selector.evaluate(0, run.reranker))
        for step in bar:
            done, started = step + 1, time.perf_counter()  # done: steps run so far (an early stop ends sooner)
            metrics = _accumulate(run, model, step)
            if metrics is None:  # a non-finite loss on some process: every process skips the step
                _skip(run, step)
                continue
            metrics.update(step=step + 1, **_update(run, step), seconds=time.perf_counter() - started)
            log_file.write(metrics)
            bar.set_postfix(postfix(metrics))
            if _validate(run, step, log_file):
                break
            _checkpoint(run, step)
    return _finish(run, (time.perf_counter() - t0) / max(done - run.first_step, 1), progress)


def _setup(
    cfg: Config,
    reranker: Reranker | None,
    reader: Reader | None,
    teachers: TeacherCache | None,
    before: dict[str, Any] | None,
    resume: bool,
    splits: tuple[list[Example], list[Example]] | None,
) -> _Run:
    """Data, models, objective, optimizer and generators; restored from the last checkpoint on resume."""
    objectives.check(cfg)
    train_set, held_out = splits if splits is not None else load_splits(cfg.data)
    train_set, validation = split_validation(train_set, cfg.data.num_val)
    check_data(cfg, train_set, held_out)
    acc = _accelerator(cfg)
    run_dir = Path(cfg.train.out_dir)
    ckpt = checkpoint.latest(run_dir) if resume else None
    if ckpt is not None:
        checkpoint.check_resumable(cfg, run_dir)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump(cfg))
    reranker = reranker or Reranker.from_pretrained(
        cfg.reranker.model, kind=cfg.reranker.kind, max_length=cfg.reranker.max_length, temperature=cfg.reranker.temperature
    )
    reader = reader or build_reader(cfg.reader)
    objective = objectives.build(cfg, teachers or TeacherCache(cfg.train.teacher_cache or None))
    torch.manual_seed(cfg.train.seed)  # the reranker's dropout; everything else takes explicit generators
    anchor = (
        StartAnchor(reranker, weight=cfg.objective.kl_to_start, temperature=cfg.objective.temperature_score)
        if cfg.objective.kl_to_start > 0
        else None
    )  # taken before a resume loads later weights: the true start
    if cfg.train.train_layers:
        restrict_trainable(reranker, cfg.train.train_layers)
    trainable = [p for p in reranker.parameters() if p.requires_grad]
    selector = (
        Selector(
            run_dir,
            reader,
            validation,
            held_out,
            k=cfg.objective.k,
            patience=cfg.train.patience,
            batch_size=cfg.eval.batch_size,
            save=acc.is_main_process,
        )
        if cfg.train.eval_every
        else None
    )
    run = _Run(
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
        _restore(run, ckpt)
    return run


def _restore(run: _Run, ckpt: Path) -> None:
    """Weights, optimizer, generators, data queue and selection state of checkpoint ``ckpt``."""
    checkpoint.load_reranker_weights(ckpt, run.reranker)
    state = checkpoint.load_optimizer(ckpt, run.optimizer)
    rng = checkpoint.load_state_tensors(ckpt)
    run.noise.set_state(rng["noise"])
    run.order.set_state(rng["order"])
    torch.set_rng_state(rng["torch"])
    run.first_step, run.skipped, run.queue = state["step"], state["skipped"], state["queue"]
    run.before, run.resumed = state.get("before"), True
    if run.selector is not None:
        run.selector.restore_state(state.get("selection") or {})
    log.warning("resuming %s from %s (step %d)", run.run_dir, ckpt.name, run.first_step)


def _accumulate(run: _Run, model: Any, step: int) -> dict[str, float] | None:
    """Forward and backward over ``train.grad_accum`` batches; the metrics averaged over them, or None
    when any process saw a non-finite loss (then no process steps: a lone backward would wait forever)."""
    cfg = run.cfg
    share = cfg.train.batch_size // run.acc.num_processes
    mine = slice(run.acc.process_index * share, (run.acc.process_index + 1) * share)
    metrics: dict[str, float] = {}
    for _ in range(cfg.train.grad_accum):
        if len(run.queue) < cfg.train.batch_size:
            run.queue += torch.randperm(len(run.train_set), generator=run.order).tolist()
        idx, run.queue = run.queue[: cfg.train.batch_size], run.queue[cfg.train.batch_size :]
        seeds = torch.randint(0, 2**62, (len(idx),), generator=run.noise).tolist()  # the same on every process
        batch = Batch([run.train_set[i] for i in idx[mine]], progress=step / max(cfg.train.steps - 1, 1), noise_seeds=seeds[mine])
        scores = model(batch.examples)
        out = run.objective(batch, scores, run.reader, run.noise)
        loss = out.loss
        if run.anchor is not None:
            kl = run.anchor(batch.examples, scores, batch.valid)
            out.metrics["kl_to_start"] = kl.item() / cfg.objective.kl_to_start
            loss = loss + kl
        if float(run.acc.reduce(torch.tensor(float(not torch.isfinite(loss))), "sum")):
            return None
        run.acc.backward(loss / cfg.train.grad_accum)
        for key, value in out.metrics.items():
            metrics[key] = metrics.get(key, 0.0) + value / cfg.train.grad_accum
    keys = sorted(metrics)
    averaged = run.acc.reduce(torch.tensor([metrics[k] for k in keys], dtype=torch.float64), "mean").tolist()
    return dict(zip(keys, averaged, strict=True))


def _skip(run: _Run, step: int) -> None:
    run.skipped += 1
    run.optimizer.zero_grad(set_to_none=True)
    log.warning("step %d: non-finite loss, step skipped (%d so far)", step + 1, run.skipped)
    limit = run.cfg.train.max_nonfinite_steps
    if limit and run.skipped >= limit:
        raise NonFiniteLossError(
            f"stopped at step {step + 1}: {run.skipped} steps had a non-finite loss (train.max_nonfinite_steps="
            f"{limit}); last good checkpoint: {checkpoint.latest(run.run_dir) or 'none'}. Lower train.lr, raise "
            "objective.tau, or check the data"
        )


def _update(run: _Run, step: int) -> dict[str, float]:
    """Clip, set the scheduled LR, step the optimizer; the LR and the gradient norm."""
    grad_norm = run.acc.clip_grad_norm_(run.trainable, run.cfg.train.grad_clip)
    lr = set_lr(run.optimizer, run.cfg, step)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"lr": lr, "grad_norm": float(grad_norm)}


def _validate(run: _Run, step: int, log_file: MetricsLog) -> bool:
    """Every ``train.eval_every`` steps: the label-free validation point; True when patience ran out."""
    every = run.cfg.train.eval_every
    if run.selector is None or (step + 1) % every:
        return False
    log_file.write(run.selector.evaluate(step + 1, run.reranker))
    if run.selector.should_stop:
        log.warning(
            "early stop at step %d: no better validation answer NLL for %d evaluations (best: step %s)",
            step + 1,
            run.cfg.train.patience,
            run.selector.best_step,
        )
    return run.selector.should_stop


def _checkpoint(run: _Run, step: int) -> None:
    every = run.cfg.train.checkpoint_every
    if not run.main or not every or (step + 1) % every:
        return
    rng = {"noise": run.noise.get_state(), "order": run.order.get_state(), "torch": torch.get_rng_state()}
    checkpoint.save(
        run.run_dir,
        step + 1,
        run.reranker,
        run.optimizer,
        finite(
            {
                "skipped": run.skipped,
                "queue": run.queue,
                "before": run.before,
                "selection": run.selector.state() if run.selector else None,
            }
        ),
        state=rng,
    )


def _finish(run: _Run, seconds_per_step: float, progress: bool) -> TrainResult:
    """The selected reranker saved as reranker/, evaluated on the held-out questions; report.json."""
    cfg, reranker = run.cfg, run.reranker
    reranker.eval()
    run.acc.wait_for_everyone()
    before = run.before or {}
    if not run.main:
        return TrainResult(run.run_dir, before, {}, seconds_per_step, run.skipped, [])
    selection = None
    if run.selector is not None:
        if cfg.train.select == "val_loss":
            run.selector.restore_best(reranker)
        selection = {"select": cfg.train.select, **run.selector.summary()}
        run.selector.plot()
    checkpoint.save_reranker(reranker, run.run_dir / "reranker")
    after_scores = score_all(reranker, run.held_out, batch_size=cfg.eval.batch_size, progress=progress)
    after = evaluate(cfg, reranker, run.reader, run.held_out, progress=progress, scores=after_scores)
    write_json(
        run.run_dir / "report.json",
        {
            "before": before,
            "after": after,
            "seconds_per_step": seconds_per_step,
            "skipped_steps": run.skipped,
            "train_questions": len(run.train_set),
            "held_out_questions": len(run.held_out),
            "processes": run.acc.num_processes,
            "resumed_from_step": run.first_step if run.resumed else None,
            "selection": selection,
        },
        indent=2,
    )
    return TrainResult(run.run_dir, before, after, seconds_per_step, run.skipped, after_scores)


BAR_METRICS = ("loss", "mask_sum", "mask_distinct", "mask_overlap")  # shown on the progress bar when logged


def postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's fields: the loss, the mask telemetry where the objective logs it, s/step."""
    shown = {k: f"{metrics[k]:.3f}" if k == "loss" else f"{metrics[k]:.2f}" for k in BAR_METRICS if k in metrics}
    return {**shown, "s_per_step": f"{metrics['seconds']:.2f}"}
