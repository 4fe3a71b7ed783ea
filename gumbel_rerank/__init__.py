"""gumbel-rerank: train a RAG reranker end to end from the frozen reader's answer loss (Gumbel
Reranking, ACL 2025), beside its rivals on one harness.

    from gumbel_rerank import train, evaluate, Reranker
    result = train("configs/default.yaml", train={"steps": 40})
    reranker = Reranker.from_pretrained(result.run_dir / "reranker")

The names below load on first use, so that a torch-free part (the ONNX reranker,
:mod:`gumbel_rerank.onnx_reranker`) can be imported without torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import audit, evaluate, train
    from .config import Config
    from .config import load as load_config
    from .data import Doc, Example
    from .rerankers import Reranker
    from .training.loop import TrainResult

_LAZY = {
    "audit": (".api", "audit"),
    "evaluate": (".api", "evaluate"),
    "train": (".api", "train"),
    "Config": (".config", "Config"),
    "load_config": (".config", "load"),
    "Doc": (".data", "Doc"),
    "Example": (".data", "Example"),
    "Reranker": (".rerankers", "Reranker"),
    "TrainResult": (".training.loop", "TrainResult"),
}

try:
    __version__ = _version("gumbel-rerank")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gumbel_rerank' has no attribute {name!r}")


__all__ = ["Config", "Doc", "Example", "Reranker", "TrainResult", "__version__", "audit", "evaluate", "load_config", "train"]
