"""Frozen readers behind one interface (:class:`~gumbel_rerank.readers.base.Reader`), one class per layout."""

from __future__ import annotations

from typing import Any

from .. import devices
from ..config import ReaderConfig
from ..models import load_causal_lm
from .base import Reader
from .decoder import DecoderReader, PromptTemplate
from .fid import FiDReader
from .parallel import ParallelReader
from .sequential import SequentialReader

READERS: dict[str, type] = {"fid": FiDReader, "parallel": ParallelReader, "sequential": SequentialReader}


def make_reader(layout: str, model: Any, tokenizer: Any, **options: Any) -> Reader:
    """The reader of ``layout`` around a loaded model; ``options`` are that layout's keyword arguments."""
    if layout not in READERS:
        raise ValueError(f"reader.layout must be one of {', '.join(READERS)}, got {layout!r}")
    if options.get("gradient_checkpointing") and layout != "sequential":
        raise ValueError(
            "reader.gradient_checkpointing is for the sequential layout (parallel and fid encode docs without gradient)"
        )
    return READERS[layout](model, tokenizer, **options)  # type: ignore[no-any-return]


def load_adapter(model: Any, path: str) -> Any:
    """``model`` with the LoRA adapter saved in ``path`` merged into its weights (peft)."""
    from pathlib import Path

    if not (Path(path) / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"reader.adapter={path!r} holds no adapter (adapter_config.json); make one with `gumbel-rerank adapt-reader CONFIG`"
        )
    try:
        from peft import PeftModel
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("reader.adapter needs peft: pip install 'gumbel-rerank[adapt]'") from err
    return PeftModel.from_pretrained(model, path).merge_and_unload()


def build_reader(cfg: ReaderConfig, model: Any = None, tokenizer: Any = None, *, device: Any = None) -> Reader:
    """The frozen reader for ``cfg`` (in ``reader.dtype``, on ``device``; ``reader.device_map`` shards it
    instead); pass ``model``/``tokenizer`` to skip loading."""
    if model is None:
        model, tokenizer = load_causal_lm(cfg.model, dtype=devices.dtype(cfg.dtype, device), device_map=cfg.device_map or None)
        if cfg.adapter:
            model = load_adapter(model, cfg.adapter)
        if device is not None and not cfg.device_map:
            model = model.to(device)
    options: dict[str, Any] = {"max_doc_tokens": cfg.max_doc_tokens, "max_answer_tokens": cfg.max_answer_tokens}
    if cfg.layout == "parallel":
        options["doc_cache_mb"] = cfg.doc_cache_mb
        # a sharded reader (device_map) has no single-device doc copy: auto keeps its own dtype there
        name = "" if cfg.device_map and cfg.doc_dtype == "auto" else cfg.doc_dtype
        options["doc_dtype"] = devices.doc_dtype(name, model.dtype, model.device)
        options["doc_cache_dtype"] = devices.dtype(cfg.doc_cache_dtype) if cfg.doc_cache_dtype else None
    if cfg.gradient_checkpointing:
        options["gradient_checkpointing"] = True
    return make_reader(cfg.layout, model, tokenizer, **options)


__all__ = [
    "READERS",
    "DecoderReader",
    "FiDReader",
    "ParallelReader",
    "PromptTemplate",
    "Reader",
    "SequentialReader",
    "build_reader",
    "make_reader",
]
