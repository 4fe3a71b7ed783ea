"""The Python entry points: ``train`` a reranker from a config (or a path) with overrides, and
``evaluate`` any reranker on questions with labelled candidates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Config, ConfigError
from .config import load as load_config
from .data import Example, read_examples
from .evaluation.evaluate import retrieval_metrics, score_all
from .rerankers import Reranker
from .training import loop as _train

Data = str | Path | Sequence[Example]


def _examples(data: Data) -> list[Example]:
    return list(read_examples(data)) if isinstance(data, str | Path) else list(data)


def _config(config: Config | str | Path | None, sections: dict[str, Any]) -> Config:
    """``config`` with each section's keys applied as ``section.key=value`` overrides (checked as on the CLI)."""
    overrides = [
        f"{section}.{key}={_yaml(value)}" for section, keys in sections.items() for key, value in _mapping(section, keys).items()
    ]
    return config if isinstance(config, Config) and not overrides else load_config(config, overrides)


def train(
    config: Config | str | Path | None = None,
    *,
    data: Data | dict[str, Any] | None = None,
    eval_data: Data | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    **sections: dict[str, Any],
) -> _train.TrainResult:
    """Train a reranker; returns the :class:`~gumbel_rerank.training.loop.TrainResult` (``before`` / ``after``
    held-out metrics, ``run_dir`` with the trained ``reranker/``).

    ``config`` is a :class:`Config`, a YAML path or None (the defaults). Each keyword names a config
    section and maps keys to values, checked as on the command line: ``train("configs/default.yaml",
    train={"steps": 40}, objective={"k": 3})``. ``data`` may also be a data file's path or a list of
    :class:`Example` to train on (then ``eval_data``, a path or a list, are the held-out questions).
    A ``train.out_dir`` that holds another run is refused unless ``resume`` or ``overwrite``.
    """
    examples: list[Example] | None = None
    if data is not None and not isinstance(data, dict):
        examples = _examples(data)
        data = None
    cfg = _config(config, {**sections, "data": data or {}})
    splits = None
    if examples is not None:
        splits = (examples, _examples(eval_data) if eval_data is not None else [])
    elif eval_data is not None:
        raise ConfigError("eval_data needs data as well (a path or a list of Example); or set data.eval_source")
    return _train.train(cfg, progress=progress, resume=resume, splits=splits, overwrite=overwrite)


def evaluate(
    reranker: Reranker | str | Path, data: Data, *, ks: Sequence[int] = (2, 5), batch_size: int = 8, progress: bool = False
) -> dict[str, float]:
    """Gold, answer-doc and bridge-doc ranking metrics of ``reranker`` (an object, a run folder, a saved
    or exported reranker, a packaged name or a hub id) on labelled questions."""
    model = Reranker.from_pretrained(str(reranker)) if isinstance(reranker, str | Path) else reranker
    examples = [ex for ex in _examples(data) if ex.docs]
    if not examples:
        raise ValueError("evaluate: no question with candidate docs")
    return retrieval_metrics(examples, score_all(model, examples, batch_size=batch_size, progress=progress), ks)


def _mapping(section: str, keys: Any) -> dict[str, Any]:
    if not isinstance(keys, dict):
        raise ConfigError(f"{section}= must map config keys to values, e.g. {section}={{'...': ...}}; got {keys!r}")
    return keys


def _yaml(value: Any) -> str:
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value)  # JSON is YAML: typed on the way back


def audit(
    config: Config | str | Path | None = None,
    *,
    data: str | Path | None = None,
    questions: int | None = None,
    split: str = "validation",
    subsets: int = 4,
    progress: bool = True,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """Can this config's reader teach its reranker? The audit of :mod:`gumbel_rerank.evaluation.audit`
    (``result["summary"]["verdict"]`` says it in words) on the config's ``split`` or the file ``data``."""
    from .evaluation.audit import audit as _audit

    return _audit(_config(config, sections), data=data, questions=questions, split=split, subsets=subsets, progress=progress)
