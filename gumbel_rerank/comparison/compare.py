"""``compare``: a one-seed sweep over objectives. Each trains a copy of the same starting reranker with
the same seed (same batches, same noise) on one reader and one teacher cache, is evaluated on the
same questions, and lands in one table with plots and paired tests (:mod:`gumbel_rerank.comparison.report`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..data import load_splits
from ..evaluation.runfiles import write_trec_run
from ..objectives import OBJECTIVES
from ..readers.base import Reader
from .sweep import Row, run_group
from .writer import write_report


@dataclass
class CompareResult:
    rows: dict[str, dict[str, Any]]  # "zero-shot" and each objective -> its metrics (summary.json)
    out_dir: Path


def parse_objectives(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not names:
        raise ConfigError(f"unknown objective(s) {unknown or text!r}; choose from {', '.join(OBJECTIVES)}")
    return list(dict.fromkeys(names))


def compare(
    cfg: Config,
    objectives: Sequence[str],
    out_dir: str | Path,
    *,
    progress: bool = True,
    reader: Reader | None = None,
    on_result: Any = None,
) -> CompareResult:
    """Train ``cfg`` once per objective (seed ``train.seed``) into ``out_dir``: runs/*.json, the run
    folders ``<objective>.seed<seed>/``, table.md / table.csv / summary.json, plots and a TREC run file
    per row. ``reader`` skips loading it. A rerun skips the objectives that already have a result."""
    out = Path(out_dir)
    rows = [
        Row(name, dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, name=name)))
        for name in parse_objectives(",".join(objectives))
    ]
    run_group(rows, [cfg.train.seed], out, out, reader=reader, progress=progress, on_result=on_result)
    write_report(
        out,
        title=f"Objectives compared: {cfg.reader.model} ({cfg.reader.layout}), reranker "
        f"{cfg.reranker.model} ({cfg.reranker.kind}), data {cfg.data.source}",
    )
    _, held_out = load_splits(cfg.data)
    for f in sorted((out / "runs").glob("*.json")):
        res = json.loads(f.read_text())
        write_trec_run(held_out, res["held_out_scores"], out / f"{res['row']}.run", res["row"])
    return CompareResult(json.loads((out / "summary.json").read_text()), out)
