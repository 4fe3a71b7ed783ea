"""A run folder that one training owns: refused when it holds another run (unless resumed or
overwritten), locked for the run's lifetime, and checked writable before any model loads.

``--overwrite`` removes only what a training run writes there (:data:`RUN_FILES`, :data:`RUN_DIRS`,
``checkpoint-*``), never anything else a user keeps in the folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

from ..config import ConfigError

LOCK = ".lock"
RUN_FILES = ("config.yaml", "metrics.jsonl", "report.json", "report.md", "selection.png", "latest")
RUN_DIRS = ("reranker", "best", "eval")


def run_files(run_dir: Path) -> list[Path]:
    """What an earlier training run left in ``run_dir`` (empty: the folder holds no run)."""
    found = [run_dir / n for n in RUN_FILES if (run_dir / n).is_file()]
    found += [run_dir / n for n in RUN_DIRS if (run_dir / n).is_dir()]
    found += sorted(p for p in run_dir.glob("checkpoint-*") if p.is_dir())
    found += sorted(p for p in run_dir.glob(".tmp-checkpoint-*") if p.is_dir())
    return found


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock``, held until :meth:`release` (or the process ends:
    the kernel drops it, so a killed run never leaves a stale lock)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.file: IO[str] | None = self.path.open("a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            self.file = None
            raise ConfigError(
                f"{run_dir}: another training is writing into this folder now; wait for it or choose another train.out_dir"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def claim(run_dir: str | Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Make ``run_dir`` this run's: a folder we can write, locked, and holding no other run (resume
    continues the run there; ``overwrite`` removes the earlier run's files first)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"train.out_dir {str(run_dir)!r} is a file; name a folder for the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
    except PermissionError:
        raise ConfigError(f"train.out_dir {str(run_dir)!r}: no permission to write there; choose another folder") from None
    except OSError as err:
        raise ConfigError(f"train.out_dir {str(run_dir)!r}: cannot write there ({err.strerror})") from None
    old = [] if resume else run_files(run_dir)
    if old and not overwrite:
        lock.release()
        names = ", ".join(p.name for p in old[:4]) + (", ..." if len(old) > 4 else "")
        raise ConfigError(
            f"{run_dir} already holds a run ({names}); pass --resume to continue it, --overwrite to replace it, "
            "or choose another train.out_dir"
        )
    for path in old:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return lock
