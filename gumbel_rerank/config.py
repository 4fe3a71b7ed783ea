"""Configs: frozen dataclasses mirrored by YAML, with typed ``key=value`` overrides.

An unknown key is an error that names the closest valid key; a value of the wrong type is an
error that names the expected type. Everything is checked before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

SCHEDULES = ("constant", "linear", "cosine")  # the LR after warmup (transformers' schedulers of these names)
SELECTIONS = ("last", "val_loss")  # which reranker a run ends with (gumbel_rerank.selection)
TRACKERS = ("tensorboard", "wandb", "mlflow")  # accelerate's trackers that train.report_to may name
DTYPES = ("float32", "bfloat16", "float16")  # reader.dtype (gumbel_rerank.devices maps them to torch)


class ConfigError(ValueError):
    """A config that cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a path to a data file
    eval_source: str = ""  # separate held-out file; empty = split off `source`
    num_train: int = 400
    num_eval: int = 100
    eval_start: int = 0  # file data: the held-out questions start at this index of `source` (0: after the training ones)
    num_docs: int = 8  # docs per synthetic question
    hard_negatives: int = 2  # synthetic: docs about the question's entity with another relation (0-2)
    min_docs: int = 0  # file data: skip (and count) questions with fewer candidate docs than this
    num_val: int = 0  # the last num_val training questions are held back (never trained on) for label-free selection
    shuffle: bool = False  # file data: split a fixed permutation of `source` (seeded by data.seed), not the file order
    seed: int = 0  # synthetic data, and the permutation of data.shuffle (training seeds are train.seed)


@dataclass(frozen=True)
class RerankerConfig:
    model: str = "all-minilm-l6-v2"
    kind: str = "cross"  # cross | bi
    max_length: int = 256
    temperature: float = 0.05  # bi-encoder: score = cosine / temperature


@dataclass(frozen=True)
class ReaderConfig:
    model: str = "smollm2-135m-instruct"
    layout: str = "parallel"  # fid | parallel | sequential
    max_doc_tokens: int = 256
    max_answer_tokens: int = 32
    doc_cache_mb: float = 0  # parallel: keep encoded docs across steps/epochs/objectives within this budget
    gradient_checkpointing: bool = False  # sequential layout: recompute layers in the backward pass (less memory)
    device_map: str = ""  # "auto": shard a large reader over the visible GPUs (docs/training.md: "Beyond one machine")
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on a CPU) | float32 | bfloat16 | float16: the frozen reader's precision
    doc_dtype: str = ""  # parallel: encode and cache the docs (no gradient) in this dtype; "" = reader.dtype
    doc_cache_dtype: str = ""  # parallel: keep the encoded docs' keys/values in this dtype (float16: half the memory)
    adapter: str = ""  # a LoRA adapter folder from `gumbel-rerank adapt-reader`, merged in, then frozen


@dataclass(frozen=True)
class ObjectiveConfig:
    name: str = "gumbel"
    k: int = 4
    tau: float = 0.5
    tau_final: float | None = None  # anneal tau geometrically to this value over training
    kappa: float = 1.0  # score spread against unit Gumbel noise (in score standard deviations when calibrated)
    calibration: str = "standardize"  # standardize (z-score each question's scores first) | none (the old fixed kappa)
    samples: int = 1  # Gumbel samples per question
    relaxation: str = "threshold"  # threshold (sums to k, entries in [0, 1]) | l2x (the paper's max of k draws) | subset
    straight_through: bool = False
    noise: bool = True  # False: the "no Gumbel noise" ablation
    log_hard_loss: bool = True  # also log the reader loss under the hard top-k mask (the soft/hard gap)
    # distillation rivals (names as in Atlas): P_R = softmax(w / temperature_score), target softmax(g / temperature_gold)
    temperature_gold: float = 0.01
    temperature_score: float = 0.01
    adist_aggregation: str = "scores"  # scores (FiD: mean pre-softmax score) | value_norm (Atlas: attention x |v|)
    # ADist's teacher temperature; None = the published one: 1 for scores (FiD), temperature_gold for value_norm (Atlas)
    adist_temperature: float | None = None
    # trust region for every objective: + kl_to_start * KL(P_start || P_now), P = softmax(w / temperature_score)
    kl_to_start: float = 0.0
    emdr_per_token: bool = False  # EMDR2 marginalised per answer token (Atlas) instead of per sequence


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 3e-5
    warmup_steps: int = 0  # linear warmup from 0 to train.lr over this many optimizer steps
    schedule: str = "linear"  # after warmup: constant | linear (decay to 0 at train.steps) | cosine
    weight_decay: float = 0.01
    train_layers: int = 0  # only the top N encoder layers (+ pooler / head) learn; 0 = all
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    teacher_cache: str = ""  # directory for the distillation teachers' cache ("" = memory only)
    eval_every: int = 0  # every N steps: validation answer NLL under the hard top-k (needs data.num_val), gold R@k logged
    select: str = "last"  # last | val_loss (restore the checkpoint with the lowest validation answer NLL)
    patience: int = 0  # stop after this many evaluations without a new best validation loss; 0 = never
    max_nonfinite_steps: int = 10  # stop the run after this many skipped (non-finite loss) steps; 0 = never
    out_dir: str = "runs/default"
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda: where reranker and reader run
    report_to: tuple[str, ...] = ()  # accelerate trackers besides metrics.jsonl: tensorboard, wandb, mlflow


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (2, 4)
    generate: bool = True  # reader EM/F1 on the hard top-k docs
    answer_nll: bool = True  # the reader's answer NLL per token given the hard top-k docs
    max_new_tokens: int = 16
    batch_size: int = 8
    # with train.train_layers, a bi-encoder's frozen bottom layers run once per text across a run's
    # evaluations (their outputs kept within this budget; 0 = off): exact, only faster
    prefix_cache_mb: float = 2048


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    reranker: RerankerConfig = field(default_factory=RerankerConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        tp = get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            out.append(prefix + f.name)
    return out


VALID_KEYS = _keys(Config)


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(VALID_KEYS)}"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            value = [value]
        return tuple(_coerce(key, v, get_args(tp)[0]) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(raw: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        full = prefix + str(key)
        if key not in names:
            raise _unknown(full)
        tp = hints[key]
        nested = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        kwargs[key] = from_dict(value, tp, full + ".") if nested else _coerce(full, value, tp)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. objective.tau=0.3")
    key, text = item.split("=", 1)
    key = key.strip()
    if key not in VALID_KEYS:
        raise _unknown(key)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot parse the value of {key}: {err}") from None
    return key, value


def load(path: str | Path | Config | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or take a Config, or start from the defaults) and apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    if isinstance(path, Config):
        raw = path.to_dict()
    elif path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    for item in overrides:
        key, value = parse_override(item)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        raw[section][name] = value
    return validate(from_dict(raw))


def validate(cfg: Config) -> Config:
    """Cross-field checks that must fail before any model loads (this module imports nothing of the
    package: the objective's name is checked against the registry by ``objectives.check``)."""
    checks = [
        (cfg.reader.layout in ("fid", "parallel", "sequential"), "reader.layout must be fid, parallel or sequential"),
        (cfg.reranker.kind in ("cross", "bi"), "reranker.kind must be cross or bi"),
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
            cfg.reader.doc_dtype in ("", *DTYPES) and cfg.reader.doc_cache_dtype in ("", *DTYPES),
            f"reader.doc_dtype and reader.doc_cache_dtype must be empty or one of {', '.join(DTYPES)}",
        ),
        (
            (cfg.reader.doc_dtype in ("", cfg.reader.dtype) and not cfg.reader.doc_cache_dtype)
            or cfg.reader.layout == "parallel",
            "reader.doc_dtype and reader.doc_cache_dtype are for the parallel layout",
        ),
        (cfg.objective.tau_final is None or cfg.objective.tau_final > 0, "objective.tau_final must be > 0"),
        (cfg.objective.samples >= 1, "objective.samples must be >= 1"),
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
    return cfg  # objective.name and each objective's data precondition: gumbel_rerank.objectives.check


def dump(cfg: Config) -> str:
    data = cfg.to_dict()
    data["eval"]["ks"] = list(data["eval"]["ks"])
    return yaml.safe_dump(data, sort_keys=False)
