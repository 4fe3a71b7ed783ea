"""``gumbel-rerank adapt-reader``: a LoRA adapter (peft) that fits the frozen reader to the task first.

The paper's readers were trained for their task (FiD-Large fine-tuned on the dataset); ours are
zero-shot instruct models that answer verbosely and treat a bridge doc like a distractor. Adapting
the reader the way FiD is trained needs no doc labels: the loss is the answer NLL given **all** of
each training question's candidates (every doc at weight 1), in the layout the reader is used in.
In the parallel layout the docs are encoded without gradient (as in every reader pass), so the
adapter learns from the question and answer tokens reading them; in sequential and fid the
gradient reaches the doc tokens too. Only the adapter's weights train; it is saved as
safetensors, and ``reader.adapter: PATH`` merges it into the reader, which is then frozen as before.

The run folder gets ``adapter/``, ``metrics.jsonl``, atomic checkpoints (resume as ``train``) and
``report.json``: the held-out answer NLL per token (gold docs only, and all candidates) and the
greedy EM/F1 from the gold docs, before and after.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import Config, ConfigError
from ..data import Example, load_splits, split_validation
from ..evaluation.metrics import exact_match, f1_score, mean
from ..evaluation.runfiles import MetricsLog
from ..jsonsafe import usual_mode, write_json
from ..models import load_causal_lm
from ..objectives import Batch
from ..readers import build_reader
from ..readers.base import Reader
from ..readers.doc_cache import DocCache
from ..readers.parallel import ParallelReader
from . import checkpoint
from .schedule import put_lr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptSettings:
    steps: int = 200
    batch_size: int = 2
    lr: float = 2e-4
    rank: int = 8
    alpha: int = 16
    target_modules: str = "all-linear"  # peft's shorthand, or comma-separated module names (e.g. q_proj,v_proj)
    warmup_steps: int = 10
    checkpoint_every: int = 50
    eval_questions: int = 100  # held-out questions in the before / after report
    max_new_tokens: int = 16
    seed: int = 0
    out_dir: str = "runs/adapter"


@dataclass
class AdaptResult:
    run_dir: Path
    before: dict[str, float]
    after: dict[str, float]


def gold_only(ex: Example) -> Example:
    """The question with its gold docs only (the reader's best case); all docs when none is marked gold."""
    gold = tuple(d for d in ex.docs if d.is_gold)
    return dataclasses.replace(ex, docs=gold) if gold else ex


def reader_report(reader: Reader, examples: list[Example], *, max_new_tokens: int = 16, batch_size: int = 4) -> dict[str, float]:
    """Answer NLL per token with the gold docs and with all candidates, and greedy EM/F1 from the gold docs.

    A reader that encodes each doc on its own (the parallel layout) encodes a chunk's docs once for the three
    passes: the gold docs are a subset of all of them (a cache for the chunk only; the weights do not change).
    """
    out: dict[str, list[float]] = {"answer_nll_gold": [], "answer_nll_all": [], "EM_gold": [], "F1_gold": []}
    cached = reader if isinstance(reader, ParallelReader) and reader.doc_cache is None else None
    try:
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                chunk = examples[i : i + batch_size]
                if cached is not None:
                    cached.doc_cache = DocCache(2048)
                gold = [gold_only(ex) for ex in chunk]
                for key, group in (("answer_nll_all", chunk), ("answer_nll_gold", gold)):
                    batch = Batch(group)
                    w = batch.valid.float().unsqueeze(1)
                    out[key] += (-reader.answer_logprob(batch.context(reader), w).mean())[:, 0].tolist()
                for ex, pred in zip(gold, reader.generate(gold, Batch(gold).valid, max_new_tokens=max_new_tokens), strict=True):
                    out["EM_gold"].append(exact_match(pred, ex.answers))
                    out["F1_gold"].append(f1_score(pred, ex.answers))
    finally:
        if cached is not None:
            cached.doc_cache = None
    return {k: mean(v) for k, v in out.items()}


def _forget(reader: Reader) -> None:
    """The weights changed: a reader that caches encodings (the parallel prefix) must recompute them."""
    forget = getattr(reader, "forget", None)
    if forget is not None:
        forget()


def _lora_model(cfg: Config, settings: AdaptSettings) -> tuple[Any, Any]:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("adapt-reader needs peft: pip install 'gumbel-rerank[adapt]'") from err
    from .. import devices

    model, tokenizer = load_causal_lm(cfg.reader.model, dtype=devices.dtype(cfg.reader.dtype, devices.pick(cfg.train.device)))
    targets: Any = settings.target_modules if settings.target_modules == "all-linear" else settings.target_modules.split(",")
    task = "SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else "CAUSAL_LM"
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, target_modules=targets, task_type=task)
    with torch.random.fork_rng(devices=[]):  # the adapter's initial weights depend on its seed only, not on the caller
        torch.manual_seed(settings.seed)
        return get_peft_model(model, lora), tokenizer


def adapt_reader(
    cfg: Config, settings: AdaptSettings, *, progress: bool = True, resume: bool = False, model: Any = None, tokenizer: Any = None
) -> AdaptResult:
    """Train a LoRA adapter for ``cfg.reader`` on the training split's answers (no doc labels).

    ``model`` (a peft model) and ``tokenizer`` skip loading (tests)."""
    if cfg.reader.adapter:
        raise ConfigError("adapt-reader trains a new adapter: drop reader.adapter from the config")
    if settings.steps < 0 or settings.batch_size < 1 or settings.lr <= 0 or settings.rank < 1:
        raise ConfigError("adapt-reader: steps >= 0, batch size >= 1, lr > 0 and rank >= 1")
    train_set, held_out = load_splits(cfg.data)
    train_set, _ = split_validation(train_set, cfg.data.num_val)  # the validation questions stay unseen
    held_out = held_out[: settings.eval_questions]
    if not train_set:
        raise ConfigError("adapt-reader: no training questions; check data.source and data.num_train")
    run_dir = Path(settings.out_dir)
    ckpt = checkpoint.latest(run_dir, checkpoint.RESUMABLE) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"resume: {run_dir} holds no intact checkpoint; drop --resume to start from the beginning")
    if model is None:
        model, tokenizer = _lora_model(cfg, settings)
    # docs in the reader's own precision: the adapter changes every step, so a doc copy would be rebuilt each time
    reader = build_reader(
        dataclasses.replace(cfg.reader, doc_cache_mb=0, doc_dtype="", doc_cache_dtype=""), model=model, tokenizer=tokenizer
    )
    trainable = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in trainable:  # build_reader froze everything; the adapter (only) learns
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(settings.seed)
    first, queue, before = 0, [], None
    if ckpt is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(ckpt / "reranker" / "adapter_model.safetensors")))
        state = checkpoint.load_optimizer(ckpt, optimizer)
        order.set_state(checkpoint.load_state_tensors(ckpt)["order"])
        first, queue, before = state["step"], state["queue"], state.get("before")
        log.warning("resuming %s from %s (step %d)", run_dir, ckpt.name, first)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(dataclasses.asdict(settings), indent=1))
    if before is None:
        before = reader_report(reader, held_out, max_new_tokens=settings.max_new_tokens)
    bar = tqdm(range(first, settings.steps), desc="adapt reader", disable=not progress, initial=first, total=settings.steps)
    with MetricsLog(run_dir / "metrics.jsonl", keep_until=first if ckpt is not None else None) as log_file:
        for step in bar:
            started = time.perf_counter()
            if len(queue) < settings.batch_size:
                queue += torch.randperm(len(train_set), generator=order).tolist()
            idx, queue = queue[: settings.batch_size], queue[settings.batch_size :]
            batch = Batch([train_set[i] for i in idx])
            weights = batch.valid.float().unsqueeze(1)  # every candidate in play, as FiD trains
            loss = -reader.answer_logprob(batch.context(reader), weights).mean().mean()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            lr = put_lr(optimizer, settings.lr, step, warmup=settings.warmup_steps, total=settings.steps, kind="linear")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _forget(reader)
            row = {
                "step": step + 1,
                "loss": loss.item(),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "seconds": time.perf_counter() - started,
            }
            log_file.write(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0:
                checkpoint.save(
                    run_dir, step + 1, model, optimizer, {"queue": queue, "before": before}, state={"order": order.get_state()}
                )
    after = reader_report(reader, held_out, max_new_tokens=settings.max_new_tokens)
    model.save_pretrained(str(run_dir / "adapter"))  # adapter_config.json + adapter_model.safetensors
    for saved in (run_dir / "adapter").glob("*.safetensors"):
        usual_mode(saved)
    write_json(
        run_dir / "report.json",
        {
            "before": before,
            "after": after,
            "reader": cfg.reader.model,
            "layout": cfg.reader.layout,
            "train_questions": len(train_set),
            "held_out_questions": len(held_out),
            "settings": dataclasses.asdict(settings),
        },
        indent=2,
    )
    return AdaptResult(run_dir, before, after)
