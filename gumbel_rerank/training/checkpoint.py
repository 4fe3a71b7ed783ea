"""Crash-safe checkpoints: write into a temporary directory, then rename; a pointer names the latest.

A crash during a save leaves a ``.tmp-*`` directory behind and the previous checkpoint untouched.
Only safetensors and JSON are written or read: nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import Config, ConfigError
from ..config import load as load_config
from ..jsonsafe import usual_mode
from ..rerankers import Reranker

LATEST = "latest"
log = logging.getLogger(__name__)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(usual_mode(tmp), path)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        scalars["state"][str(pid)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.contiguous()
            else:
                scalars["state"][str(pid)][name] = value
    return tensors, scalars


def save(
    run_dir: str | Path,
    step: int,
    reranker: Reranker,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    *,
    keep: int = 2,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``checkpoint-{step}`` atomically, point ``latest`` at it, and keep the last ``keep``.

    ``state`` tensors (e.g. RNG states) go to ``state.safetensors`` next to the trainer state.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".tmp-checkpoint-"))
    reranker.save_pretrained(tmp / "reranker")
    tensors, scalars = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(scalars))
    save_file({k: v.contiguous() for k, v in (state or {}).items()}, str(tmp / "state.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}))
    if final.exists():
        shutil.rmtree(final)
    usual_mode(tmp).rename(final)
    _write_atomic(run_dir / LATEST, final.name)
    older = sorted((p for p in run_dir.glob("checkpoint-*") if _step(p) is not None and p != final), key=lambda p: _step(p) or 0)
    for old in older[: max(len(older) - (keep - 1), 0)]:  # the one just written is always kept
        shutil.rmtree(old, ignore_errors=True)
    return final


RESUMABLE = ("step", "queue")  # what a training or adaptation run's trainer state must hold to resume


def latest(run_dir: str | Path, required: tuple[str, ...] = ("step",)) -> Path | None:
    """The newest intact checkpoint of a run, or None when there is none.

    A checkpoint whose files are missing, truncated or unreadable is skipped with a warning that names
    it, so a resume falls back to the previous intact one; the ``latest`` pointer is a hint only.
    """
    run_dir = Path(run_dir)
    found = sorted((p for p in run_dir.glob("checkpoint-*") if _step(p) is not None), key=lambda p: _step(p) or 0, reverse=True)
    pointer = run_dir / LATEST
    hint = pointer.read_text(errors="replace").strip() if pointer.is_file() else None
    for path in found:
        problem = broken(path, required)
        if problem is None:
            if hint is not None and hint != path.name:
                log.warning(
                    "%s: the latest pointer names %r; resuming from %s, the newest intact checkpoint",
                    run_dir,
                    hint[:80],
                    path.name,
                )
            return path
        log.warning("skipping %s: %s", path, problem)
    return None


def _step(path: Path) -> int | None:
    tail = path.name.removeprefix("checkpoint-")
    return int(tail) if tail.isdigit() and path.is_dir() else None


def broken(path: Path, required: tuple[str, ...] = ("step",)) -> str | None:
    """Why checkpoint ``path`` cannot be resumed from (a missing, truncated or unparsable file), or None."""
    from safetensors import safe_open

    kinds = {"step": int, "queue": list, "skipped": int}
    shapes: dict[str, dict[str, type]] = {
        "trainer_state.json": {k: kinds.get(k, object) for k in required},
        "optimizer.json": {"state": dict, "param_groups": list},
    }
    for name, keys in shapes.items():
        try:
            saved = json.loads((path / name).read_text())
        except (OSError, ValueError) as err:
            return f"{name} is unreadable ({type(err).__name__}: {str(err)[:80]})"
        if not isinstance(saved, dict):
            return f"{name} is not a JSON object"
        wrong = [k for k, tp in keys.items() if not isinstance(saved.get(k), tp) or isinstance(saved.get(k), bool)]
        if wrong:
            return f"{name} lacks {', '.join(wrong)} (or they have the wrong type)"
    weights = sorted(str(f.relative_to(path)) for f in (path / "reranker").glob("*.safetensors"))  # a reranker's or an adapter's
    for name in ("optimizer.safetensors", "state.safetensors", *(weights or ["reranker/model.safetensors"])):
        try:
            with safe_open(str(path / name), "pt") as f:  # checks the header against the file's length
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    f.get_slice(key)
        except Exception as err:  # SafetensorError, OSError: the file is missing or cut short
            return f"{name} is unreadable ({type(err).__name__}: {str(err)[:80]})"
    return None


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer in place; return the trainer state saved with it."""
    tensors = load_file(str(path / "optimizer.safetensors"))
    scalars = json.loads((path / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in scalars["state"].items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
    return dict(json.loads((path / "trainer_state.json").read_text()))


def load_state_tensors(path: Path) -> dict[str, torch.Tensor]:
    file = path / "state.safetensors"
    return load_file(str(file)) if file.exists() else {}


def load_reranker_weights(path: Path, reranker: Reranker) -> None:
    """Put a checkpoint's reranker weights into ``reranker`` in place (safetensors, strict)."""
    load_weights(path / "reranker", reranker)


def load_weights(saved: Path, reranker: Reranker) -> None:
    """Put the weights of a reranker saved in ``saved`` into ``reranker`` in place (safetensors, strict)."""
    from safetensors.torch import load_model

    load_model(reranker.encoder, str(saved / "model.safetensors"), strict=True)


def save_reranker(reranker: Reranker, target: Path, extra: dict[str, str] | None = None) -> None:
    """Save ``reranker`` (and ``extra`` files: name -> text) as ``target``, replacing it atomically:
    the new folder is complete before the old one is moved aside, so a crash leaves one intact."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-save-") as tmp:
        staged = Path(tmp) / "new"
        reranker.save_pretrained(staged)
        for name, text in (extra or {}).items():
            (staged / name).write_text(text)
        if target.exists():
            target.rename(Path(tmp) / "old")  # removed with the temporary folder
        staged.rename(target)


def check_resumable(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume ``run_dir`` with another config than the one it was started with; ``train.steps``
    may grow and ``train.out_dir`` may differ (a copied or moved run folder resumes)."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return

    def comparable(c: Config) -> dict[str, Any]:
        d = c.to_dict()
        d["train"].pop("steps")
        d["train"].pop("out_dir")
        return {f"{section}.{key}": value for section, keys in d.items() for key, value in keys.items()}

    try:
        before = comparable(load_config(saved))
    except ValueError as err:
        raise ConfigError(f"{saved} cannot be read ({err}); it is not a run to resume") from None
    now = comparable(cfg)
    differ = [k for k in now if now[k] != before.get(k)]
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in differ[:5])
        raise ConfigError(
            f"{run_dir} holds a run with another config ({shown}); resume with the same config "
            f"(only train.steps may change) or pick another train.out_dir"
        )
