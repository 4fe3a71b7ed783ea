"""The learning-rate schedule: linear warmup, then constant, linear or cosine decay.

A pure function of the optimizer step, so a resumed run needs no scheduler state; it follows
``transformers.get_scheduler`` for the same names exactly (a test holds it to that), so the LR a
user sets is the LR they know from Hugging Face's Trainer: the first step of a warmup runs at 0.
"""

from __future__ import annotations

import math

import torch

from ..config import SCHEDULES, Config


def lr_factor(step: int, *, warmup: int, total: int, kind: str) -> float:
    """Multiplier of ``train.lr`` at 0-based optimizer step ``step`` of ``total``."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, cfg: Config, step: int) -> float:
    """Put the scheduled LR of 0-based optimizer step ``step`` into every param group; return it."""
    t = cfg.train
    return put_lr(optimizer, t.lr, step, warmup=t.warmup_steps, total=t.steps, kind=t.schedule)


def put_lr(optimizer: torch.optim.Optimizer, base: float, step: int, *, warmup: int, total: int, kind: str) -> float:
    """``base`` times :func:`lr_factor` of step ``step`` into every param group of ``optimizer``; return it."""
    lr = base * lr_factor(step, warmup=warmup, total=total, kind=kind)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
