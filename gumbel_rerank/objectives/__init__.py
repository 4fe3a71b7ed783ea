"""Training objectives. Adding one = one file + one line here; contract tests loop over this dict.

Every objective is built as ``OBJECTIVES[name](cfg, teachers)`` (``teachers``: the shared
:class:`TeacherCache`, ignored by objectives without a teacher) and called as
``objective(batch, doc_scores, reader, generator) -> LossOutput``.
"""

from __future__ import annotations

from .adist import ADistObjective
from .base import Batch, LossOutput, Objective
from .emdr import EMDRObjective
from .gumbel import GumbelObjective
from .loop import LOOPObjective
from .lsr import LSRObjective
from .pdist import PDistObjective
from .supervised import SupervisedObjective
from .teachers import TeacherCache

OBJECTIVES: dict[str, type] = {
    "gumbel": GumbelObjective,
    "adist": ADistObjective,
    "emdr": EMDRObjective,
    "pdist": PDistObjective,
    "loop": LOOPObjective,
    "lsr": LSRObjective,
    "supervised": SupervisedObjective,
}

__all__ = ["OBJECTIVES", "Batch", "LossOutput", "Objective", "TeacherCache"]
