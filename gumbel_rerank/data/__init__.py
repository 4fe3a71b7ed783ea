"""Data: one example schema, dataset readers and the embedded synthetic generator."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from ..config import ConfigError, DataConfig
from .formats import read_examples
from .schema import DataError, Doc, Example
from .synthetic import generate

log = logging.getLogger(__name__)


def load_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    """Training and held-out questions as the config describes them (``data.extra_train``'s questions
    first in the training list, so that the last ``data.num_val`` stay the source's)."""
    train_set, held_out = _source_splits(cfg)
    if not cfg.extra_train:
        return train_set, held_out
    return _with_extra(cfg, train_set, held_out), held_out


def _with_extra(cfg: DataConfig, train_set: list[Example], held_out: list[Example]) -> list[Example]:
    """``data.extra_train``'s questions, less any whose id is already a training or held-out question's
    (a held-out question must never be trained on), before the source's training questions."""
    taken = {ex.id for ex in train_set} | {ex.id for ex in held_out}
    extra = _enough_docs(list(read_examples(cfg.extra_train)), cfg.min_docs, cfg.extra_train)
    kept = [ex for ex in extra if ex.id not in taken]
    if len(kept) < len(extra):
        log.warning(
            "%s: dropped %d of %d questions whose id is already a training or held-out question's",
            cfg.extra_train,
            len(extra) - len(kept),
            len(extra),
        )
    if len({ex.id for ex in kept}) < len(kept):
        raise DataError(f"{cfg.extra_train}: question ids repeat; each question needs its own id")
    return kept + train_set


def _source_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    if cfg.source == "synthetic":
        examples = generate(cfg.num_train + cfg.num_eval, num_docs=cfg.num_docs, seed=cfg.seed, hard_negatives=cfg.hard_negatives)
    else:
        examples = _enough_docs(list(read_examples(cfg.source)), cfg.min_docs, cfg.source)
        if cfg.shuffle:  # files are often ordered (HotpotQA's IRCoT dev file: no yes/no question in its first 200)
            random.Random(cfg.seed).shuffle(examples)
    train_set = examples[: cfg.num_train]
    if cfg.eval_source:
        held_out = _enough_docs(list(read_examples(cfg.eval_source)), cfg.min_docs, cfg.eval_source)
        return train_set, _not_trained_on(held_out, train_set, cfg.eval_source)[: cfg.num_eval]
    if cfg.source == "synthetic":
        return train_set, examples[cfg.num_train :]
    start = cfg.eval_start or cfg.num_train  # a fixed held-out set whatever num_train (learning curves)
    if len(examples) < start + cfg.num_eval:
        raise DataError(
            f"{cfg.source} has {len(examples)} questions, fewer than the held-out end "
            f"(data.eval_start or data.num_train) + data.num_eval = {start + cfg.num_eval}; lower them"
        )
    return train_set, examples[start : start + cfg.num_eval]


def _not_trained_on(held_out: list[Example], train_set: list[Example], source: str) -> list[Example]:
    """``data.eval_source``'s questions, less any whose id is a training question's (two files of one
    dataset often share questions: HotpotQA's fullwiki and IRCoT dev subsets share 42)."""
    taken = {ex.id for ex in train_set}
    return _kept(held_out, lambda ex: ex.id not in taken, source, "whose id is a training question's (never held out)")


def _enough_docs(examples: list[Example], min_docs: int, source: str) -> list[Example]:
    return _kept(examples, lambda ex: len(ex.docs) >= min_docs, source, f"with fewer than data.min_docs={min_docs} docs")


def _kept(examples: list[Example], keep: Callable[[Example], bool], source: str, why: str) -> list[Example]:
    """The examples ``keep`` accepts; the others are counted in a warning, never dropped silently."""
    kept = [ex for ex in examples if keep(ex)]
    if len(kept) < len(examples):
        log.warning("%s: skipped %d of %d questions %s", source, len(examples) - len(kept), len(examples), why)
    return kept


def split_validation(train_set: list[Example], num_val: int) -> tuple[list[Example], list[Example]]:
    """The last ``num_val`` training questions become the label-free validation split (not trained on)."""
    if num_val <= 0:
        return train_set, []
    if num_val >= len(train_set):
        raise ConfigError(f"data.num_val={num_val} leaves no training question of {len(train_set)}; lower it")
    return train_set[:-num_val], train_set[-num_val:]


__all__ = ["DataError", "Doc", "Example", "generate", "load_splits", "read_examples", "split_validation"]
