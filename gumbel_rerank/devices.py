"""Where the models run and in which precision: ``train.device`` and ``reader.dtype`` as torch objects."""

from __future__ import annotations

import torch

from .config import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is visible, else the CPU; ``cpu`` / ``cuda`` as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device(name)


def dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    """``auto``: bfloat16 on CUDA, float32 elsewhere (bench/precision.py: a bf16 reader keeps the doc-weight
    gradient at cosine >= 0.9995 with fp32's, SmolLM2 and Gemma; a CPU pays for bf16 in accuracy what it
    gains in speed only partly, so the CPU stays exact)."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"reader.dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def fast_bf16(device: torch.device | str | None = None) -> bool:
    """Whether bfloat16 arithmetic is native here: a CUDA device that supports it, or a CPU with
    AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than float32)."""
    kind = torch.device(device or "cpu").type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return kind == "cpu" and bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def doc_dtype(name: str, reader_dtype: torch.dtype, device: torch.device | str | None = None) -> torch.dtype | None:
    """``reader.doc_dtype`` as the dtype the parallel reader encodes its docs in, or None for the reader's own.
    ``auto``: bfloat16 under a float32 reader on a CPU where bf16 is native (:func:`fast_bf16`): the cold
    training step 1.4x faster with the doc-weight gradient at cosine 0.999 (mean; min 0.985) with fp32's
    (bench/precision.py, bench/train_step.py); elsewhere (a GPU, whose reader is bf16 already under
    ``reader.dtype: auto``, or a CPU without bf16) the reader's dtype."""
    if name == "auto":
        cpu = torch.device(device or "cpu").type == "cpu"
        return torch.bfloat16 if cpu and reader_dtype == torch.float32 and fast_bf16("cpu") else None
    return dtype(name) if name else None
