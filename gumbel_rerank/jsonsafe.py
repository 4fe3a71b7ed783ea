"""Strict JSON for every file the library writes: NaN and infinities become null, writes are atomic.

A metric with nothing relevant anywhere (bridge recall on yes/no questions) is NaN; strict JSON has
no NaN, and a reader in another language would choke on Python's ``NaN`` token.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts, lists and tuples) replaced by None."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def write_json(path: str | Path, value: Any, *, indent: int | None = 1) -> None:
    """Atomic: a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(dumps(value, indent=indent))
    os.replace(f.name, path)
