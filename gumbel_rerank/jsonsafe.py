"""Strict JSON for every file the library writes: NaN and infinities become null, writes are atomic
and files get the usual permissions (:func:`usual_mode`).

A metric with nothing relevant anywhere (bridge recall on yes/no questions) is NaN; strict JSON has
no NaN, and a reader in another language would choke on Python's ``NaN`` token.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

_P = TypeVar("_P", str, Path)


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
    write_text(path, dumps(value, indent=indent))


def write_text(path: str | Path, text: str) -> None:
    """Atomic (a temporary file beside ``path``, renamed over it), with the umask's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as f:
        try:
            f.write(text)
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    os.replace(usual_mode(f.name), path)


def usual_mode(path: _P) -> _P:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the mode ``open`` / ``mkdir`` would
    have given it under the user's umask, before it is renamed into place; returns ``path``."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)
    return path
