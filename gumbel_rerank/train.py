"""The one training loop: the reranker learns, the reader is frozen, the objective is pluggable."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import checkpoint
from .config import Config, ConfigError, ReaderConfig, dump
from .data import Example, load_splits
from .evaluate import reader_metrics, retrieval_metrics, score_all
from .models import load_causal_lm
from .objectives import OBJECTIVES, Batch, TeacherCache
from .readers.base import Reader
from .readers.decoder import DecoderReader
from .readers.fid import FiDReader
from .rerankers import Reranker
from .schedule import lr_factor
from .selection import Selector
from .stabilize import StartAnchor, restrict_trainable

log = logging.getLogger(__name__)


def build_reader(cfg: ReaderConfig, model: Any = None, tokenizer: Any = None) -> Reader:
    """The frozen reader for ``cfg.layout``; pass ``model``/``tokenizer`` to skip loading."""
    if model is None:
        model, tokenizer = load_causal_lm(cfg.model, device_map=cfg.device_map or None)
    if cfg.layout == "fid":
        return FiDReader(model, tokenizer, max_doc_tokens=cfg.max_doc_tokens, max_answer_tokens=cfg.max_answer_tokens)
    return DecoderReader(model, tokenizer, layout=cfg.layout, max_doc_tokens=cfg.max_doc_tokens,
                         max_answer_tokens=cfg.max_answer_tokens, gradient_checkpointing=cfg.gradient_checkpointing,
                         doc_cache_mb=cfg.doc_cache_mb)


def split_validation(train_set: list[Example], num_val: int) -> tuple[list[Example], list[Example]]:
    """The last ``num_val`` training questions become the label-free validation split (not trained on)."""
    if num_val <= 0:
        return train_set, []
    if num_val >= len(train_set):
        raise ConfigError(f"data.num_val={num_val} leaves no training question of {len(train_set)}; lower it")
    return train_set[:-num_val], train_set[-num_val:]


def check_data(cfg: Config, train: list[Example], held_out: list[Example]) -> None:
    """Data problems that must stop a run before any model loads."""
    if not train:
        raise ConfigError("no training questions; check data.source and data.num_train")
    fewest = min(len(ex.docs) for ex in train)
    if cfg.objective.name == "gumbel" and cfg.objective.k > fewest:
        raise ConfigError(
            f"objective.k={cfg.objective.k} is larger than the number of docs of some training question ({fewest}); "
            f"lower objective.k to at most {fewest}"
        )


def evaluate(cfg: Config, reranker: Reranker, reader: Reader | None, examples: list[Example],
             *, progress: bool = True, scores: list[list[float]] | None = None) -> dict[str, Any]:
    """Ranking metrics at every k in ``eval.ks``, plus EM/F1 from the top-k docs if asked.

    ``scores`` are the reranker's scores of ``examples`` when the caller already has them.
    """
    if not examples:
        return {}
    if scores is None:
        scores = score_all(reranker, examples, batch_size=cfg.eval.batch_size, progress=progress)
    result: dict[str, Any] = retrieval_metrics(examples, scores, cfg.eval.ks)
    if cfg.eval.generate and reader is not None:
        qa = reader_metrics(reader, examples, scores, k=cfg.objective.k, batch_size=cfg.eval.batch_size,
                            max_new_tokens=cfg.eval.max_new_tokens, progress=progress)
        result.update(EM=qa["EM"], F1=qa["F1"])
    return result


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
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be a multiple of the {acc.num_processes} "
                          "processes (each takes an equal share of every batch)")
    return acc


def _check_resumable(cfg: Config, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    from .config import load as load_config

    def comparable(c: Config) -> dict[str, Any]:
        d = c.to_dict()
        d["train"].pop("steps")  # a resumed run may be extended
        return d

    if comparable(load_config(saved)) != comparable(cfg):
        raise ConfigError(f"{run_dir} holds a run with another config; resume with the same config "
                          f"(only train.steps may change) or pick another train.out_dir")


def train(cfg: Config, *, progress: bool = True, reranker: Reranker | None = None,
          reader: Reader | None = None, teachers: TeacherCache | None = None,
          before: dict[str, Any] | None = None, resume: bool = False) -> TrainResult:
    """Train ``cfg``; the run directory gets config.yaml, metrics.jsonl, checkpoints, reranker/ and report.json.

    ``reranker``, ``reader`` and ``teachers`` skip loading or share them across runs (``compare``);
    ``before`` is the starting reranker's held-out evaluation when the caller already has it.
    ``resume`` continues from the run directory's last checkpoint (weights, optimizer, data order,
    Gumbel noise and dropout RNG states), ending with the weights an uninterrupted run would have.
    Under ``accelerate launch``/``torchrun`` every process holds the reader and a replica of the
    reranker and takes an equal slice of each batch; gradients are averaged (DDP).
    """
    train_set, held_out = load_splits(cfg.data)
    train_set, validation = split_validation(train_set, cfg.data.num_val)
    check_data(cfg, train_set, held_out)
    acc = _accelerator(cfg)
    main = acc.is_main_process
    run_dir = Path(cfg.train.out_dir)
    ckpt = checkpoint.latest(run_dir) if resume else None
    if ckpt is not None:
        _check_resumable(cfg, run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump(cfg))
    reranker = reranker or Reranker.from_pretrained(cfg.reranker.model, kind=cfg.reranker.kind,
                                                    max_length=cfg.reranker.max_length,
                                                    temperature=cfg.reranker.temperature)
    reader = reader or build_reader(cfg.reader)
    teachers = teachers or TeacherCache(cfg.train.teacher_cache or None)
    objective = OBJECTIVES[cfg.objective.name](cfg.objective, teachers)

    torch.manual_seed(cfg.train.seed)  # the reranker's dropout; everything else takes explicit generators
    noise = torch.Generator().manual_seed(cfg.train.seed)
    order = torch.Generator().manual_seed(cfg.train.seed + 1)
    anchor = StartAnchor(reranker, weight=cfg.objective.kl_to_start, temperature=cfg.objective.temperature_score) \
        if cfg.objective.kl_to_start > 0 else None  # taken before a resume loads later weights: the true start
    if cfg.train.train_layers:
        restrict_trainable(reranker, cfg.train.train_layers)
    trainable = [p for p in reranker.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    queue: list[int] = []
    first_step, skipped = 0, 0
    if ckpt is not None:
        checkpoint.load_reranker_weights(ckpt, reranker)
        state = checkpoint.load_optimizer(ckpt, optimizer)
        rng = checkpoint.load_state_tensors(ckpt)
        noise.set_state(rng["noise"])
        order.set_state(rng["order"])
        torch.set_rng_state(rng["torch"])
        first_step, skipped, queue, before = state["step"], state["skipped"], state["queue"], state.get("before")
        log.warning("resuming %s from %s (step %d)", run_dir, ckpt.name, first_step)
    selector = Selector(run_dir, reader, validation, held_out, k=cfg.objective.k, patience=cfg.train.patience,
                        batch_size=cfg.eval.batch_size, save=main) if cfg.train.eval_every else None
    if selector is not None and ckpt is not None:
        selector.restore_state(state.get("selection") or {})
    if before is None:
        before = evaluate(cfg, reranker, reader, held_out, progress=progress) if main else {}
    model = acc.prepare(reranker)  # DDP across processes; the same module in a single process
    model.train()
    share = cfg.train.batch_size // acc.num_processes
    mine = slice(acc.process_index * share, (acc.process_index + 1) * share)
    log_path = run_dir / "metrics.jsonl"
    kept = [x for x in log_path.read_text().splitlines() if json.loads(x)["step"] <= first_step] \
        if ckpt is not None and log_path.exists() else []
    t0 = time.perf_counter()
    bar = tqdm(range(first_step, cfg.train.steps), desc=f"train {cfg.objective.name}", disable=not (progress and main),
               initial=first_step, total=cfg.train.steps)
    with (log_path.open("w") if main else open(os.devnull, "w")) as log_file:
        log_file.writelines(x + "\n" for x in kept)
        if selector is not None and first_step == 0:  # the start is a candidate: selection can keep it
            log_file.write(json.dumps(_no_nan(selector.evaluate(0, reranker))) + "\n")
        done = first_step
        for step in bar:
            done = step + 1  # steps run so far (an early stop ends before train.steps)
            started = time.perf_counter()
            metrics: dict[str, float] = {}
            bad = 0.0
            for _ in range(cfg.train.grad_accum):
                if len(queue) < cfg.train.batch_size:
                    queue += torch.randperm(len(train_set), generator=order).tolist()
                idx, queue = queue[: cfg.train.batch_size], queue[cfg.train.batch_size :]
                seeds = torch.randint(0, 2**62, (len(idx),), generator=noise).tolist()  # same on every process
                batch = Batch([train_set[i] for i in idx[mine]], progress=step / max(cfg.train.steps - 1, 1),
                              noise_seeds=seeds[mine])
                scores = model(batch.examples)
                out = objective(batch, scores, reader, noise)
                loss = out.loss
                if anchor is not None:
                    kl = anchor(batch.examples, scores, batch.valid)
                    out.metrics["kl_to_start"] = kl.item() / cfg.objective.kl_to_start
                    loss = loss + kl
                bad = float(acc.reduce(torch.tensor(float(not torch.isfinite(loss))), "sum"))
                if bad:  # every process skips together (a lone backward would wait forever in DDP)
                    break
                acc.backward(loss / cfg.train.grad_accum)
                for key, value in out.metrics.items():
                    metrics[key] = metrics.get(key, 0.0) + value / cfg.train.grad_accum
            if bad:
                skipped += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss, step skipped (%d so far)", step + 1, skipped)
                if cfg.train.max_nonfinite_steps and skipped >= cfg.train.max_nonfinite_steps:
                    last = checkpoint.latest(run_dir)
                    raise NonFiniteLossError(
                        f"stopped at step {step + 1}: {skipped} steps had a non-finite loss "
                        f"(train.max_nonfinite_steps={cfg.train.max_nonfinite_steps}); last good checkpoint: "
                        f"{last or 'none'}. Lower train.lr, raise objective.tau, or check the data")
                continue
            grad_norm = acc.clip_grad_norm_(trainable, cfg.train.grad_clip)
            lr = set_lr(optimizer, cfg, step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            keys = sorted(metrics)
            averaged = acc.reduce(torch.tensor([metrics[k] for k in keys], dtype=torch.float64), "mean").tolist()
            metrics = dict(zip(keys, averaged, strict=True))
            metrics.update(step=step + 1, lr=lr, grad_norm=float(grad_norm), seconds=time.perf_counter() - started)
            log_file.write(json.dumps(metrics) + "\n")
            log_file.flush()
            bar.set_postfix(postfix(metrics))
            if selector is not None and (step + 1) % cfg.train.eval_every == 0:
                point = selector.evaluate(step + 1, reranker)
                log_file.write(json.dumps(_no_nan(point)) + "\n")
                if selector.should_stop:
                    log.warning("early stop at step %d: no better validation answer NLL for %d evaluations (best: "
                                "step %s)", step + 1, cfg.train.patience, selector.best_step)
                    break
            if main and cfg.train.checkpoint_every and (step + 1) % cfg.train.checkpoint_every == 0:
                rng = {"noise": noise.get_state(), "order": order.get_state(), "torch": torch.get_rng_state()}
                checkpoint.save(run_dir, step + 1, reranker, optimizer,
                                {"skipped": skipped, "queue": queue, "before": _no_nan(before),
                                 "selection": _no_nan(selector.state()) if selector else None}, state=rng)
    seconds_per_step = (time.perf_counter() - t0) / max(done - first_step, 1)
    reranker.eval()
    acc.wait_for_everyone()
    if not main:
        return TrainResult(run_dir, before, {}, seconds_per_step, skipped, [])
    selection = None
    if selector is not None:
        if cfg.train.select == "val_loss":
            selector.restore_best(reranker)
        selection = {"select": cfg.train.select, **selector.summary()}
        selector.plot()
    checkpoint.save_reranker(reranker, run_dir / "reranker")
    after_scores = score_all(reranker, held_out, batch_size=cfg.eval.batch_size, progress=progress)
    after = evaluate(cfg, reranker, reader, held_out, progress=progress, scores=after_scores)
    report = {"before": before, "after": after, "seconds_per_step": seconds_per_step, "skipped_steps": skipped,
              "train_questions": len(train_set), "held_out_questions": len(held_out),
              "processes": acc.num_processes, "resumed_from_step": first_step if ckpt is not None else None,
              "selection": selection}
    (run_dir / "report.json").write_text(json.dumps(_no_nan(report), indent=2))
    return TrainResult(run_dir, before, after, seconds_per_step, skipped, after_scores)


BAR_METRICS = ("loss", "mask_sum", "mask_distinct", "mask_overlap")  # shown on the progress bar when logged


def postfix(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's fields: the loss, the mask telemetry where the objective logs it, s/step."""
    shown = {k: f"{metrics[k]:.3f}" if k == "loss" else f"{metrics[k]:.2f}" for k in BAR_METRICS if k in metrics}
    return {**shown, "s_per_step": f"{metrics['seconds']:.2f}"}


def set_lr(optimizer: torch.optim.Optimizer, cfg: Config, step: int) -> float:
    """Put the scheduled LR of 0-based optimizer step ``step`` into every param group; return it."""
    lr = cfg.train.lr * lr_factor(step, warmup=cfg.train.warmup_steps, total=cfg.train.steps, kind=cfg.train.schedule)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _no_nan(value: Any) -> Any:
    """Strict JSON: NaN (a metric with no relevant doc anywhere) becomes null."""
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value
