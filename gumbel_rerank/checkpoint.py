"""Crash-safe checkpoints: write into a temporary directory, then rename; a pointer names the latest.

A crash during a save leaves a ``.tmp-*`` directory behind and the previous checkpoint untouched.
Only safetensors and JSON are written or read: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import Config, ConfigError
from .config import load as load_config
from .rerankers import Reranker

LATEST = "latest"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    tmp.rename(final)
    _write_atomic(run_dir / LATEST, final.name)
    for old in sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: str | Path) -> Path | None:
    """The last complete checkpoint of a run, or None when there is none."""
    pointer = Path(run_dir) / LATEST
    if not pointer.exists():
        return None
    path = Path(run_dir) / pointer.read_text().strip()
    return path if (path / "trainer_state.json").exists() else None


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
    """Refuse to resume ``run_dir`` with a config other than the one it was started with."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return

    def comparable(c: Config) -> dict[str, Any]:
        d = c.to_dict()
        d["train"].pop("steps")  # a resumed run may be extended
        return d

    if comparable(load_config(saved)) != comparable(cfg):
        raise ConfigError(
            f"{run_dir} holds a run with another config; resume with the same config "
            f"(only train.steps may change) or pick another train.out_dir"
        )
