"""gumbel-rerank: train a RAG reranker end to end from the frozen reader's answer loss (Gumbel
Reranking, ACL 2025), beside its rivals on one harness.

    from gumbel_rerank import train, evaluate, Reranker
    result = train("configs/default.yaml", train={"steps": 40})
    reranker = Reranker.from_pretrained(result.run_dir / "reranker")
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .api import audit, evaluate, train
from .config import Config
from .config import load as load_config
from .data import Doc, Example
from .rerankers import Reranker
from .training.loop import TrainResult

try:
    __version__ = _version("gumbel-rerank")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Config", "Doc", "Example", "Reranker", "TrainResult", "__version__", "audit", "evaluate", "load_config", "train"]
