"""Where the models run and in which precision: ``train.device`` and ``reader.dtype`` as torch objects."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is visible, else the CPU; ``cpu`` / ``cuda`` as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device(name)


def dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"reader.dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]
