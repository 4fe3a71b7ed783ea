"""Cross-field checks that must fail before any model loads, and every float key finite."""

from __future__ import annotations

import dataclasses
import math

from .schema import DTYPES, SCHEDULES, SELECTIONS, TRACKERS, Config, ConfigError


def validate(cfg: Config) -> Config:
    """Cross-field checks that must fail before any model loads (this module imports nothing of the
    package: the objective's name is checked against the registry by ``objectives.check``)."""
    checks = [
        (cfg.reader.layout in ("fid", "parallel", "sequential"), "reader.layout must be fid, parallel or sequential"),
        (cfg.reranker.kind in ("cross", "bi"), "reranker.kind must be cross or bi"),
        (cfg.reranker.precision in ("auto", "fp32", "bf16"), "reranker.precision must be auto, fp32 or bf16"),
        (cfg.objective.relaxation in ("threshold", "l2x", "subset"), "objective.relaxation must be threshold, l2x or subset"),
        (cfg.objective.calibration in ("standardize", "none"), "objective.calibration must be standardize or none"),
        (
            cfg.objective.adist_temperature is None or cfg.objective.adist_temperature > 0,
            "objective.adist_temperature must be > 0 (or null for the published default)",
        ),
        (cfg.train.warmup_steps >= 0, "train.warmup_steps must be >= 0"),
        (cfg.eval.prefix_cache_mb >= 0, "eval.prefix_cache_mb must be >= 0 (0 turns the frozen-layer cache off)"),
        (
            cfg.objective.kl_to_start >= 0 and cfg.train.train_layers >= 0,
            "objective.kl_to_start and train.train_layers must be >= 0",
        ),
        (cfg.train.select in SELECTIONS, f"train.select must be one of {', '.join(SELECTIONS)}"),
        (
            cfg.train.eval_every >= 0 and cfg.train.patience >= 0 and cfg.data.num_val >= 0,
            "train.eval_every, train.patience and data.num_val must be >= 0",
        ),
        (
            not cfg.train.eval_every or cfg.data.num_val > 0,
            "train.eval_every needs validation questions: set data.num_val (taken from the training split)",
        ),
        (
            cfg.train.select == "last" or cfg.train.eval_every > 0,
            "train.select=val_loss needs train.eval_every > 0 (and data.num_val > 0)",
        ),
        (cfg.data.num_val < cfg.data.num_train, "data.num_val must be smaller than data.num_train"),
        (
            cfg.data.eval_start == 0 or cfg.data.eval_start >= cfg.data.num_train,
            "data.eval_start must be 0 or >= data.num_train (held-out questions are never trained on)",
        ),
        (cfg.train.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}"),
        (cfg.objective.k >= 1, "objective.k must be >= 1"),
        (0 < cfg.objective.tau < math.inf, "objective.tau must be > 0 and finite"),
        (0 < cfg.objective.kappa < math.inf, "objective.kappa must be > 0 and finite (0 leaves only noise to learn from)"),
        (0 < cfg.reranker.temperature < math.inf, "reranker.temperature must be > 0 and finite (score = cosine / temperature)"),
        (bool(cfg.train.out_dir.strip()), "train.out_dir must name a folder (empty would write into the current one)"),
        (set(cfg.train.report_to) <= set(TRACKERS), f"train.report_to may name {', '.join(TRACKERS)}"),
        (cfg.train.device in ("auto", "cpu", "cuda"), "train.device must be auto, cpu or cuda"),
        (cfg.reader.dtype in ("auto", *DTYPES), f"reader.dtype must be auto or one of {', '.join(DTYPES)}"),
        (
            cfg.reader.doc_dtype in ("", "auto", *DTYPES) and cfg.reader.doc_cache_dtype in ("", *DTYPES),
            f"reader.doc_dtype must be empty, auto or one of {', '.join(DTYPES)}, "
            f"and reader.doc_cache_dtype empty or one of {', '.join(DTYPES)}",
        ),
        (
            (cfg.reader.doc_dtype in ("", "auto", cfg.reader.dtype) and not cfg.reader.doc_cache_dtype)
            or cfg.reader.layout == "parallel",
            "reader.doc_dtype and reader.doc_cache_dtype are for the parallel layout "
            "(with another layout set them empty: reader.doc_dtype= reader.doc_cache_dtype=)",
        ),
        (cfg.objective.tau_final is None or cfg.objective.tau_final > 0, "objective.tau_final must be > 0"),
        (cfg.objective.samples >= 1, "objective.samples must be >= 1"),
        (cfg.objective.baseline in ("loo", "none"), "objective.baseline must be loo or none"),
        (
            cfg.objective.temperature_gold > 0 and cfg.objective.temperature_score > 0,
            "objective.temperature_gold and objective.temperature_score must be > 0",
        ),
        (cfg.objective.adist_aggregation in ("scores", "value_norm"), "objective.adist_aggregation must be scores or value_norm"),
        (
            cfg.train.steps >= 0 and cfg.train.batch_size >= 1 and cfg.train.grad_accum >= 1,
            "train.steps >= 0, train.batch_size >= 1 and train.grad_accum >= 1",
        ),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (
            cfg.train.max_nonfinite_steps >= 0 and cfg.train.checkpoint_every >= 0,
            "train.max_nonfinite_steps and train.checkpoint_every must be >= 0",
        ),
        (cfg.data.num_train >= 1 and cfg.data.num_eval >= 0, "data.num_train >= 1 and data.num_eval >= 0"),
        (all(k >= 1 for k in cfg.eval.ks), "eval.ks must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            value = getattr(getattr(cfg, section.name), f.name)
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{section.name}.{f.name} must be a finite number, got {v}")
    return cfg  # objective.name and each objective's data precondition: gumbel_rerank.objectives.check
