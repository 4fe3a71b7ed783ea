"""The one training loop: the reranker learns, the reader is frozen, the objective is pluggable."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import Config
from ..data import Example
from ..evaluation.evaluate import evaluate, score_all
from ..evaluation.runfiles import MetricsLog, paired_tests
from ..jsonsafe import finite, write_json
from ..objectives import Batch, TeacherCache
from ..readers.base import Reader
from ..rerankers import Reranker
from . import checkpoint
from .run_state import NonFiniteLossError, Run, TrainResult, check_data, setup
from .schedule import set_lr

log = logging.getLogger(__name__)
__all__ = ["NonFiniteLossError", "TrainResult", "check_data", "postfix", "train"]


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
    overwrite: bool = False,
    before_scores: list[list[float]] | None = None,
) -> TrainResult:
    """Train ``cfg``; the run directory gets config.yaml, metrics.jsonl, checkpoints, reranker/ and report.json.

    ``reranker``, ``reader`` and ``teachers`` skip loading or share them across runs (``compare``);
    ``before`` is the starting reranker's held-out evaluation when the caller already has it, and
    ``before_scores`` its held-out scores (step 0's validation point reads them instead of scoring again);
    ``splits`` (training, held-out questions) replace the data ``cfg.data`` describes.
    A run directory that holds another run is refused unless ``resume`` or ``overwrite`` (which removes
    only that run's files); it is locked while the run lasts.
    ``resume`` continues from the run directory's last checkpoint (weights, optimizer, data order,
    Gumbel noise and dropout RNG states), ending with the weights an uninterrupted run would have.
    Under ``accelerate launch``/``torchrun`` every process holds the reader and a replica of the
    reranker and takes an equal slice of each batch; gradients are averaged (DDP).
    """
    with torch.random.fork_rng(devices=[]):  # the run seeds the global RNG (dropout); the caller's state comes back
        run = setup(cfg, reranker, reader, teachers, before, resume, splits, overwrite)
        try:
            return _train(run, progress, before_scores)
        finally:
            run.release()


def _train(run: Run, progress: bool, start_scores: list[list[float]] | None = None) -> TrainResult:
    """The loop: evaluate the start, step, log, validate, checkpoint; then select and report.
    ``start_scores``: the start's held-out scores, where known; step 0's validation point reads them."""
    cfg = run.cfg
    parts = {"start_evaluation": 0.0, "steps": 0.0, "validation": 0.0, "checkpoints": 0.0}  # wall seconds, this process
    with _timed(parts, "start_evaluation"):
        if run.before is None:
            if run.main:
                start_scores = score_all(run.reranker, run.held_out, batch_size=cfg.eval.batch_size, progress=progress)
                run.before = evaluate(
                    cfg, run.reranker, run.reader, run.held_out, progress=progress, scores=start_scores, detail=True
                )
            else:
                run.before = {}
    model = run.acc.prepare(run.reranker)  # DDP across processes; the same module in a single process
    model.train(cfg.train.dropout)  # dropout off: the reranker trains in eval mode
    t0, done = time.perf_counter(), run.first_step
    bar = tqdm(
        range(run.first_step, cfg.train.steps),
        desc=f"train {cfg.objective.name}",
        disable=not (progress and run.main),
        initial=run.first_step,
        total=cfg.train.steps,
    )
    resumed_at = run.first_step if run.resumed else None
    tracker = run.acc.log if cfg.train.report_to else None
    with MetricsLog(run.run_dir / "metrics.jsonl", write=run.main, keep_until=resumed_at, tracker=tracker) as log_file:
        if run.selector is not None and run.first_step == 0:  # the start is a candidate: selection can keep it
            with _timed(parts, "validation"):
                log_file.write(run.selector.evaluate(0, run.reranker, held_out_scores=start_scores))
        for step in bar:
            done, started = step + 1, time.perf_counter()  # done: steps run so far (an early stop ends sooner)
            metrics = _accumulate(run, model, step)
            if metrics is None:  # a non-finite loss on some process: every process skips the step
                _skip(run, step)
                continue
            metrics.update(step=step + 1, **_update(run, step), seconds=time.perf_counter() - started)
            parts["steps"] += metrics["seconds"]
            log_file.write(metrics)
            bar.set_postfix(postfix(metrics))
            with _timed(parts, "validation"):
                stop = _validate(run, step, log_file)
            if stop:
                break
            with _timed(parts, "checkpoints"):
                _checkpoint(run, step)
    result = _finish(run, (time.perf_counter() - t0) / max(done - run.first_step, 1), progress, parts)
    if cfg.train.report_to:
        final = {f"held_out/{k}": v for k, v in result.after.items() if isinstance(v, float) and math.isfinite(v)}
        run.acc.log(final, step=done)
        run.acc.end_training()
    return result


@contextmanager
def _timed(parts: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall seconds of the block to ``parts[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        parts[key] = parts.get(key, 0.0) + time.perf_counter() - start


def _accumulate(run: Run, model: Any, step: int) -> dict[str, float] | None:
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
        batch = Batch(
            [run.train_set[i] for i in idx[mine]],
            progress=step / max(cfg.train.steps - 1, 1),
            noise_seeds=seeds[mine],
            device=run.acc.device,
        )
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


def _skip(run: Run, step: int) -> None:
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


def _update(run: Run, step: int) -> dict[str, float]:
    """Clip, set the scheduled LR, step the optimizer; the LR and the gradient norm."""
    grad_norm = run.acc.clip_grad_norm_(run.trainable, run.cfg.train.grad_clip)
    lr = set_lr(run.optimizer, run.cfg, step)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {"lr": lr, "grad_norm": float(grad_norm)}


def _validate(run: Run, step: int, log_file: MetricsLog) -> bool:
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


def _checkpoint(run: Run, step: int) -> None:
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


def _kept_scores(run: Run) -> list[list[float]] | None:
    """The restored best reranker's held-out scores, where its validation point in this sitting scored
    them (the same weights, so the same scores): the final evaluation need not score them again."""
    sel = run.selector
    if sel is None or run.cfg.train.select != "val_loss" or sel.best_step is None:
        return None
    return sel.best_held_out_scores


def _kept_start(run: Run) -> dict[str, Any] | None:
    """The start's held-out evaluation when selection kept the start (step 0): the restored reranker is
    the start, so evaluating it again would give the same numbers (up to float rounding) at full cost."""
    sel = run.selector
    if sel is None or run.cfg.train.select != "val_loss" or sel.best_step != 0:
        return None
    if not run.before or "per_question" not in run.before:
        return None
    return copy.deepcopy(run.before)


def _finish(run: Run, seconds_per_step: float, progress: bool, parts: dict[str, float]) -> TrainResult:
    """The selected reranker saved as reranker/, evaluated on the held-out questions; report.json
    (with ``seconds``: where this sitting's wall time went, by part)."""
    cfg, reranker = run.cfg, run.reranker
    clock = time.perf_counter()
    reranker.eval()
    run.acc.wait_for_everyone()
    before = dict(run.before or {})
    if not run.main:
        return TrainResult(run.run_dir, before, {}, seconds_per_step, run.skipped, [])
    selection = None
    if run.selector is not None:
        if cfg.train.select == "val_loss":
            run.selector.restore_best(reranker)
        selection = {"select": cfg.train.select, **run.selector.summary()}
        run.selector.plot()
    checkpoint.save_reranker(reranker, run.run_dir / "reranker")
    after_scores = _kept_scores(run)
    if after_scores is None:
        after_scores = score_all(reranker, run.held_out, batch_size=cfg.eval.batch_size, progress=progress)
    after = _kept_start(run)
    if after is None:
        after = evaluate(cfg, reranker, run.reader, run.held_out, progress=progress, scores=after_scores, detail=True)
    parts["final_evaluation"] = time.perf_counter() - clock
    p_values = paired_tests(before, after)
    detail = {"before": before.pop("per_question", None), "after": after.pop("per_question", None)}
    write_json(run.run_dir / "held_out_per_question.json", detail)
    write_json(
        run.run_dir / "report.json",
        {
            "before": before,
            "after": after,
            "p_values": p_values,
            "seconds_per_step": seconds_per_step,
            "seconds": {**parts, "total": sum(parts.values())},
            "skipped_steps": run.skipped,
            "train_questions": len(run.train_set),
            "held_out_questions": len(run.held_out),
            "processes": run.acc.num_processes,
            "resumed_from_step": run.first_step if run.resumed else None,
            "selection": selection,
        },
        indent=2,
    )
    return TrainResult(run.run_dir, before, after, seconds_per_step, run.skipped, after_scores, selection, p_values)


BAR_METRICS = ("loss", "mask_sum", "mask_distinct", "mask_overlap")  # shown on the progress bar when logged


def postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's fields: the loss, the mask telemetry where the objective logs it, s/step."""
    shown = {k: f"{metrics[k]:.3f}" if k == "loss" else f"{metrics[k]:.2f}" for k in BAR_METRICS if k in metrics}
    return {**shown, "s_per_step": f"{metrics['seconds']:.2f}"}
