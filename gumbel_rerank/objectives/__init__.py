"""Training objectives. Adding one = one file + one entry in ``OBJECTIVES``; nothing else changes.

Every objective is a class with a ``name`` (its ``objective.name``), a ``title`` (its name in
tables), the ``objective.*`` keys it ``reads`` and a ``check_data`` precondition
(:class:`ObjectiveBase`). It is built as ``OBJECTIVES[name](cfg.objective, teachers)``
(``teachers``: the shared :class:`TeacherCache`, ignored by objectives without a teacher) and called
as ``objective(batch, doc_scores, reader, generator) -> LossOutput``. The CLI's choices, the sweep's
row order and titles, and :func:`check` all come from ``OBJECTIVES``; the contract tests loop over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import Config, ConfigError
from ..data.schema import Example
from .adist import ADistObjective
from .base import Batch, LossOutput, Objective, ObjectiveBase
from .emdr import EMDRObjective
from .gumbel import GumbelObjective
from .loop import LOOPObjective
from .lsr import LSRObjective
from .pdist import PDistObjective
from .reinforce import ReinforceObjective
from .supervised import SupervisedObjective
from .teachers import TeacherCache

OBJECTIVES: dict[str, type[ObjectiveBase]] = {
    cls.name: cls
    for cls in (
        GumbelObjective,
        ReinforceObjective,  # the score-function estimator of G-Rerank's objective, beside it
        ADistObjective,
        EMDRObjective,
        PDistObjective,
        LOOPObjective,
        LSRObjective,
        SupervisedObjective,
    )
}
# objective.* keys the training loop reads for every objective (the rest belong to the objectives' `reads`)
SHARED_KEYS = ("name", "k", "kl_to_start", "temperature_score")


def check(cfg: Config, examples: Sequence[Example] | None = None) -> None:
    """``objective.name`` is registered, and (given the training questions) they meet its precondition."""
    cls = OBJECTIVES.get(cfg.objective.name)
    if cls is None:
        raise ConfigError(f"objective.name must be one of {', '.join(OBJECTIVES)}, got {cfg.objective.name!r}")
    if examples is not None:
        if not examples:
            raise ConfigError("no training questions; check data.source and data.num_train")
        cls.check_data(cfg.objective, examples)


def build(cfg: Config, teachers: TeacherCache | None = None) -> Any:
    check(cfg)
    return OBJECTIVES[cfg.objective.name](cfg.objective, teachers)


def title(name: str) -> str:
    """An objective's name in tables (``name`` itself for a row that is no objective, e.g. zero-shot)."""
    cls = OBJECTIVES.get(name)
    return cls.title if cls is not None else name


__all__ = [
    "OBJECTIVES",
    "SHARED_KEYS",
    "Batch",
    "LossOutput",
    "Objective",
    "ObjectiveBase",
    "TeacherCache",
    "build",
    "check",
    "title",
]
