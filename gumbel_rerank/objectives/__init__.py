"""Training objectives. Adding one = one file + one line here; contract tests loop over this dict."""

from __future__ import annotations

from .base import Batch, LossOutput, Objective
from .gumbel import GumbelObjective
from .supervised import SupervisedObjective

OBJECTIVES: dict[str, type] = {
    "gumbel": GumbelObjective,
    "supervised": SupervisedObjective,
}

__all__ = ["OBJECTIVES", "Batch", "LossOutput", "Objective"]
