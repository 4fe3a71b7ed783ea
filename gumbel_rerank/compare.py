"""Train several objectives from the same starting reranker on the same batches, reader and
candidates, evaluate them on the same questions, and write one table, plots and paired tests."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, ConfigError
from .data import Example, load_splits
from .evaluate import per_question, retrieval_metrics, score_all
from .metrics import mean
from .objectives import OBJECTIVES, TeacherCache
from .readers.base import Reader
from .rerankers import Reranker
from .runfiles import paired_permutation_test, write_trec_run
from .train import build_reader, check_data, evaluate, train

BASELINE = "gumbel"  # every rival is tested against G-Rerank


@dataclass
class CompareResult:
    rows: dict[str, dict[str, Any]]  # objective (and "zero-shot") -> metrics
    out_dir: Path


def parse_objectives(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not names:
        raise ConfigError(f"unknown objective(s) {unknown or text!r}; choose from {', '.join(sorted(OBJECTIVES))}")
    return list(dict.fromkeys(names))


def compare(cfg: Config, objectives: Sequence[str], out_dir: str | Path, *, progress: bool = True,
            reader: Reader | None = None) -> CompareResult:
    """Each objective trains a copy of the same starting reranker with the same seed (same batches, same
    noise); one reader and one teacher cache serve them all. ``reader`` skips loading it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set, held_out = load_splits(cfg.data)
    check_data(dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, name="gumbel")), train_set, held_out)
    reader = reader or build_reader(cfg.reader)
    start = Reranker.from_pretrained(cfg.reranker.model, kind=cfg.reranker.kind, max_length=cfg.reranker.max_length,
                                     temperature=cfg.reranker.temperature)
    teachers = TeacherCache(cfg.train.teacher_cache or out / "teacher_cache")
    ks = cfg.eval.ks
    held_scores = {"zero-shot": score_all(start, held_out, batch_size=cfg.eval.batch_size, progress=progress)}
    mine_scores = {"zero-shot": score_all(start, train_set, batch_size=cfg.eval.batch_size, progress=progress)}
    before = evaluate(cfg, start, reader, held_out, progress=progress, scores=held_scores["zero-shot"])
    rows: dict[str, dict[str, Any]] = {"zero-shot": _row(before, train_set, mine_scores["zero-shot"], ks)}
    for name in objectives:
        run_cfg = dataclasses.replace(
            cfg, objective=dataclasses.replace(cfg.objective, name=name),
            train=dataclasses.replace(cfg.train, out_dir=str(out / name)),
        )
        trained = copy.deepcopy(start)  # trained in place by train()
        t0 = time.perf_counter()
        result = train(run_cfg, progress=progress, reranker=trained, reader=reader, teachers=teachers, before=before)
        seconds = time.perf_counter() - t0
        held_scores[name] = result.held_out_scores
        mine_scores[name] = score_all(trained, train_set, batch_size=cfg.eval.batch_size, progress=progress)
        rows[name] = _row(result.after, train_set, mine_scores[name], ks)
        rows[name].update(seconds=seconds, seconds_per_step=result.seconds_per_step, skipped=result.skipped_steps)
    _significance(rows, held_out, held_scores, ks)
    _write(out, rows, held_out, held_scores, cfg)
    return CompareResult(rows, out)


def _row(held: dict[str, Any], train_set: list[Example], mine_scores: list[list[float]], ks: Sequence[int]) -> dict[str, Any]:
    row = {k: v for k, v in held.items() if isinstance(v, float)}
    row.update({f"mining_{k}": v for k, v in retrieval_metrics(train_set, mine_scores, ks).items()})
    return row


def _significance(rows: dict[str, dict[str, Any]], held_out: list[Example], scores: dict[str, list[list[float]]],
                  ks: Sequence[int]) -> None:
    """p-value of each rival's per-question difference from G-Rerank (paired permutation test)."""
    if BASELINE not in scores:
        return
    k = max(ks)
    base = per_question(held_out, scores[BASELINE], ks)
    for name, s in scores.items():
        if name == BASELINE:
            continue
        other = per_question(held_out, s, ks)
        for metric in (f"R@{k}", f"bridge_R@{k}"):
            rows[name][f"p_vs_gumbel_{metric}"] = paired_permutation_test([r[metric] for r in base],
                                                                          [r[metric] for r in other])


COLUMNS = ("R@{k}", "FullSupport@{k}", "nDCG@{k}", "RR", "answer_R@{k}", "bridge_R@{k}", "bridge_RR",
           "bridge_nDCG@{k}", "EM", "F1", "mining_R@{k}", "mining_bridge_R@{k}", "p_vs_gumbel_R@{k}",
           "p_vs_gumbel_bridge_R@{k}", "seconds", "seconds_per_step")


def _columns(rows: dict[str, dict[str, Any]], ks: Sequence[int]) -> list[str]:
    cols: list[str] = []
    for c in COLUMNS:
        for k in (ks if "{k}" in c and not c.startswith("p_vs") else [max(ks)]):
            name = c.format(k=k)
            if name not in cols and any(name in r for r in rows.values()):
                cols.append(name)
    return cols


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


def markdown_table(rows: dict[str, dict[str, Any]], ks: Sequence[int]) -> str:
    cols = _columns(rows, ks)
    lines = ["| objective | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def _write(out: Path, rows: dict[str, dict[str, Any]], held_out: list[Example], scores: dict[str, list[list[float]]],
           cfg: Config) -> None:
    ks = cfg.eval.ks
    cols = _columns(rows, ks)
    (out / "table.md").write_text(
        f"# Objectives compared: {cfg.reader.model} ({cfg.reader.layout}), reranker {cfg.reranker.model} "
        f"({cfg.reranker.kind}), data {cfg.data.source}\n\n{len(held_out)} held-out questions; `mining_` columns: "
        f"the training questions themselves. {cfg.train.steps} steps x batch {cfg.train.batch_size} per objective, "
        f"k={cfg.objective.k}. p_vs_gumbel: paired permutation test against G-Rerank per question.\n\n"
        f"{markdown_table(rows, ks)}\n")
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["objective", *cols])
        for name, r in rows.items():
            writer.writerow([name, *(r.get(c, "") for c in cols)])
    (out / "compare.json").write_text(json.dumps(_clean(rows), indent=2))
    for name, s in scores.items():
        write_trec_run(held_out, s, out / f"{name}.run", name)
    _plots(out, held_out, scores, ks)


def _plots(out: Path, held_out: list[Example], scores: dict[str, list[list[float]]], ks: Sequence[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = list(range(1, max(len(ex.docs) for ex in held_out) + 1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in scores.items():
        rows = per_question(held_out, s, depth)
        ax.plot(depth, [mean([r[f"R@{k}"] for r in rows]) for k in depth], marker="o", ms=3, label=name,
                linestyle="--" if name == "zero-shot" else "-")
    ax.set(xlabel="k", ylabel="gold-doc Recall@k (held-out)", title="Recall@k per objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_at_k.png", dpi=120)
    plt.close(fig)

    k = max(ks)
    names = list(scores)
    values = [mean([r[f"bridge_R@{k}"] for r in per_question(held_out, scores[n], [k])]) for n in names]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [0.0 if v != v else v for v in values], color=["#999" if n == "zero-shot" else "#3a7" for n in names])
    ax.set(ylabel=f"bridge-doc Recall@{k} (held-out)", title="Bridge docs (gold, without the answer)", ylim=(0, 1))
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "bridge_recall.png", dpi=120)
    plt.close(fig)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value
