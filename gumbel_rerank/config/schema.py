"""The config's sections as frozen dataclasses (each key's default and meaning), and the named choices."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SCHEDULES = ("constant", "linear", "cosine")  # the LR after warmup (transformers' schedulers of these names)
SELECTIONS = ("last", "val_loss")  # which reranker a run ends with (gumbel_rerank.training.selection)
TRACKERS = ("tensorboard", "wandb", "mlflow")  # accelerate's trackers that train.report_to may name
DTYPES = ("float32", "bfloat16", "float16")  # reader.dtype (gumbel_rerank.devices maps them to torch)


class ConfigError(ValueError):
    """A config that cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a path to a data file
    # separate held-out file (a question of it that is also a training one is skipped and counted); "" = split off `source`
    eval_source: str = ""
    # more training questions from another file (label-free objectives need only their answers); any whose id
    # is a held-out, validation or already-chosen training question's is dropped (and counted in the log)
    extra_train: str = ""
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
    # the reranker's training forward and backward: bf16 runs them under bfloat16 autocast (weights, optimizer
    # and scores stay float32; evaluation scores in float32); auto = bf16 where it is native (CUDA, a CPU with
    # AVX512-BF16 or AMX), else fp32. bench/train_step.py: 1.5x faster, gradient cosine >= 0.999 with fp32
    precision: str = "auto"


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
    # parallel: encode and cache the docs (no gradient) in this dtype; "" = reader.dtype; auto = bfloat16 under
    # a float32 reader on a CPU with native bf16 (AVX512-BF16 / AMX), else reader.dtype (devices.doc_dtype)
    doc_dtype: str = "auto"
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
    samples: int = 1  # Gumbel samples (G-Rerank) or drawn subsets (reinforce) per question
    baseline: str = "loo"  # reinforce: loo (the other samples' mean; with 1 sample the greedy top k) | none
    relaxation: str = "threshold"  # threshold (sums to k, entries in [0, 1]) | l2x (the paper's max of k draws) | subset
    straight_through: bool = False
    # G-Rerank: each question's k drawn per step uniformly from 1..k (threshold relaxation), so that the
    # reranker learns an order inside the top k, not only a set (issue 43); False: always k
    k_draw: bool = False
    antithetic: bool = False  # G-Rerank: Gumbel samples in antithetic pairs (u, 1 - u); objective.samples must be even
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
    dropout: bool = True  # the reranker's own dropout while it trains; False trains it in eval mode (less noise, faster)
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
