"""Data: one example schema, dataset readers and the embedded synthetic generator."""

from __future__ import annotations

from ..config import DataConfig
from .formats import read_examples
from .schema import DataError, Doc, Example
from .synthetic import generate


def load_splits(cfg: DataConfig) -> tuple[list[Example], list[Example]]:
    """Training and held-out questions as the config describes them."""
    if cfg.source == "synthetic":
        examples = generate(cfg.num_train + cfg.num_eval, num_docs=cfg.num_docs, seed=cfg.seed)
        return examples[: cfg.num_train], examples[cfg.num_train :]
    examples = list(read_examples(cfg.source))
    if cfg.eval_source:
        return examples[: cfg.num_train], list(read_examples(cfg.eval_source))[: cfg.num_eval]
    if len(examples) < cfg.num_train + cfg.num_eval:
        raise DataError(
            f"{cfg.source} has {len(examples)} questions, fewer than data.num_train + data.num_eval = "
            f"{cfg.num_train + cfg.num_eval}; lower them"
        )
    return examples[: cfg.num_train], examples[cfg.num_train : cfg.num_train + cfg.num_eval]


__all__ = ["DataError", "Doc", "Example", "generate", "load_splits", "read_examples"]
