"""A second, larger held-out set for a group's trained rerankers: `python experiments/transfer.py --groups a,b`.

The groups' own held-out set is 159 HotpotQA questions. There, the per-question change of the answer
NLL given the top 5 has a standard deviation of about 1 nat per token, so a paired test detects a
mean change of about 0.22 nats (80% power, two-sided 0.05), and even the supervised control's
-0.156 (the fresh cross-encoder) has p 0.057. This script scores every trained row again on HotpotQA's
fullwiki dev subset (``../shared/data/hotpotqa/hotpot_dev_fullwiki_500.jsonl``): 500 dev questions,
each with the 10 paragraphs a retriever returned (both gold ones for only 151), which is also the
candidate list a RAG user's retriever gives. Its 42 questions that are also in the IRCoT file the
groups draw their training, validation and held-out questions from are dropped, so the set is
disjoint from every split.

Each row's selected reranker (``<work>/<group>/<row>.seed<s>/reranker``, checked against the held-out
scores its result file holds) picks its top k of the 10 candidates, and the group's frozen reader
gives its answer NLL per token (label-free); the recall columns use the questions with a gold
paragraph among the 10. Each row is compared with the group's start, paired per question
(the permutation test of the held-out tables). Fixed before any of its numbers were read: the file,
the rows (every trained row the group has), the metric and the test.

Writes ``<results>/<group>/transfer.json`` (per question, resumable row by row) and ``transfer.md``, and
(for the committed results) rewrites the ``<!-- transfer: GROUP -->`` blocks of the READMEs from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gumbel_rerank import devices
from gumbel_rerank.comparison.report import per_question_runs, seed_mean_values
from gumbel_rerank.comparison.results import AnswerMemo
from gumbel_rerank.comparison.sweep import load_group, starting_reranker
from gumbel_rerank.config import Config, ConfigError
from gumbel_rerank.data import DataError, Example, load_splits, read_examples
from gumbel_rerank.data.convert import load as load_file
from gumbel_rerank.evaluation.evaluate import per_question, score_all
from gumbel_rerank.evaluation.runfiles import holm, paired_permutation_test
from gumbel_rerank.jsonsafe import write_json
from gumbel_rerank.objectives import title
from gumbel_rerank.objectives.teachers import reader_fingerprint
from gumbel_rerank.readers import build_reader
from gumbel_rerank.readers.base import Reader
from gumbel_rerank.rerankers import Reranker

HERE = Path(__file__).parent
SOURCE = "../shared/data/hotpotqa/hotpot_dev_fullwiki_500.jsonl"
SCORE_TOLERANCE = 1e-4  # a run folder's reranker must reproduce its result file's held-out scores to this
METRICS = ("answer_nll", "R@{k}", "FullSupport@{k}", "RR")  # per question; k = the objective's k


def transfer_examples(cfg: Config, source: str, splits: tuple[list[Example], list[Example]]) -> list[Example]:
    """``source``'s questions with the group's number of candidates, less any the group's data holds (its
    training, validation and held-out questions, ``splits``, and every other question of its source file)."""
    taken = {ex.id for split in splits for ex in split}
    if cfg.data.source != "synthetic":
        taken |= {ex.id for ex in read_examples(cfg.data.source)}
    loaded = load_file(source)  # every record, the bad ones counted (fullwiki has 2 questions with no paragraph)
    for err in loaded.errors:
        print(f"left out: {err}", flush=True)
    return [ex for ex in loaded.examples if len(ex.docs) >= cfg.data.min_docs and ex.id not in taken]


def _metrics(cfg: Config) -> list[str]:
    return [m.format(k=cfg.objective.k) for m in METRICS]


def _entry(cfg: Config, examples: list[Example], scores: list[list[float]], memo: AnswerMemo) -> dict[str, Any]:
    rows = per_question(examples, scores, [cfg.objective.k])
    _, nll = memo(examples, scores, cfg.objective.k)
    return {"per_question": {m: nll if m == "answer_nll" else [r[m] for r in rows] for m in _metrics(cfg)}}


def _check_reranker(reranker: Reranker, held_out: list[Example], result: dict[str, Any], where: Path, batch: int) -> None:
    """Refuse a run folder whose reranker is not the one its result file was scored with (rerun or moved)."""
    scores = score_all(reranker, held_out, batch_size=batch)
    gap = max(abs(a - b) for s, t in zip(scores, result["held_out_scores"], strict=True) for a, b in zip(s, t, strict=True))
    if gap > SCORE_TOLERANCE:
        raise ConfigError(f"{where}: its reranker scores the held-out questions {gap:.2g} away from its result file's")


def transfer(
    group: str,
    *,
    configs: Path = HERE / "configs",
    results: Path = HERE / "results",
    work: Path = Path("runs/experiments"),
    source: str = SOURCE,
    reader: Reader | None = None,
    progress: bool = True,
    only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Score the group's start and every trained row with a result file (or those named in ``only``, as
    ``<row>.seed<s>``) on ``source``; write and return ``transfer.json`` (rows already in it are kept, if
    it was made from the same questions)."""
    cfg = load_group(configs / group)[0].cfg
    out = results / group / "transfer.json"
    splits = load_splits(cfg.data)
    held_out = splits[1]
    examples = transfer_examples(cfg, source, splits)
    ids = [ex.id for ex in examples]
    done: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if done.get("questions") != ids or done.get("source") != source:
        done = {"source": source, "questions": ids, "k": cfg.objective.k, "rows": {}}
    zero = json.loads((results / group / "runs" / "zero-shot.json").read_text())
    reader = reader or build_reader(cfg.reader, device=devices.pick(cfg.train.device))
    weights = reader_fingerprint(reader)
    if zero.get("reader_fingerprint", weights) != weights:
        raise ConfigError(f"{group}: the reader's weights are not the ones its results were made with (a remade adapter?)")
    memo = AnswerMemo(reader, dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, generate=False)))
    batch = cfg.eval.batch_size
    todo: list[tuple[str, Path | None, dict[str, Any]]] = [("zero-shot", None, zero)]
    for path in sorted((results / group / "runs").glob("*.seed*.json")):
        if only and path.stem not in only:
            continue
        todo.append((path.stem, work / group / path.stem / "reranker", json.loads(path.read_text())))
    if "zero-shot" in done["rows"] and any(name not in done["rows"] for name, _, _ in todo):
        # the start's answer NLLs, from the process that scored them: a row that keeps a question's start docs
        # gets exactly the start's value (AnswerMemo.remember), not the same docs recomputed in other batches
        start_scores = score_all(starting_reranker(cfg), examples, batch_size=cfg.eval.batch_size, progress=progress)
        memo.remember(examples, start_scores, cfg.objective.k, done["rows"]["zero-shot"]["per_question"]["answer_nll"])
    for name, folder, result in todo:
        if name in done["rows"]:
            continue
        if folder is None:
            reranker = starting_reranker(cfg)
        else:
            if not folder.is_dir():
                print(f"{group}/{name}: no run folder {folder}; left out", flush=True)
                continue
            reranker = Reranker.from_pretrained(str(folder))
        _check_reranker(reranker, held_out, result, folder or Path("zero-shot"), batch)
        entry = _entry(cfg, examples, score_all(reranker, examples, batch_size=batch, progress=progress), memo)
        done["rows"][name] = {"row": result.get("row", name), "seed": result.get("seed"), **entry}
        write_json(out, done)
        nll = entry["per_question"]["answer_nll"]
        print(f"{group}/{name}: answer NLL given the top {cfg.objective.k} {sum(nll) / len(nll):.3f}", flush=True)
    (results / group / "transfer.md").write_text(table(group, done))
    return done


def _mean(xs: list[float | None]) -> float:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(vals) / len(vals) if vals else math.nan


def _values(xs: Sequence[float | None]) -> list[float]:
    return [math.nan if x is None else float(x) for x in xs]


def seed_means(done: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per objective with 2 or more seeds scored, each question's value averaged over its seeds (the
    group tables' way, :func:`~gumbel_rerank.comparison.report.seed_mean_values`: the paired test then
    asks about the objective, not one run of it), keyed ``<row> (mean of N seeds)``."""
    means = {}
    for row, runs in per_question_runs(done["rows"], done["k"]).items():
        if row != "zero-shot" and len(runs) > 1:
            means[f"{row} (mean of {len(runs)} seeds)"] = {m: seed_mean_values(runs, m) or [] for m in runs[0]["per_question"]}
    return means


def table(group: str, done: dict[str, Any]) -> str:
    """Each row's change against the start on the transfer set, with its paired p and n; then, for an
    objective with several seeds, its seed mean's."""
    if "zero-shot" not in done["rows"]:
        return ""
    rows = {n: e["per_question"] for n, e in sorted(done["rows"].items())} | seed_means(done)
    start = rows.pop("zero-shot")
    metrics = list(start)
    k = done["k"]
    head = (
        f"# {group}: the trained rerankers on {len(done['questions'])} other HotpotQA questions (fullwiki candidates)\n\n"
        f"Generated by `python experiments/transfer.py --groups {group}` from transfer.json. Change against the "
        f"start (points of percent; answer NLL given the top {k} in nats per token, lower is better), paired "
        "permutation p, and the number of questions where the metric is defined (a gold paragraph among the 10 "
        "candidates for recall). A row `<objective> (mean of N seeds)` pairs each question's value averaged over "
        "the objective's seeds with the start.\n\n"
    )
    lines = [
        "| row | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    lines.append(
        "| start | "
        + " | ".join(f"{_mean(start[m]):.3f}" if m == "answer_nll" else f"{100 * _mean(start[m]):.1f}" for m in metrics)
        + " |"
    )
    for name, values in rows.items():
        cells = []
        for m in metrics:
            cells.append(_cell(m, *_change(_values(start[m]), _values(values[m]))))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n" + against_reference(done)


def _cell(metric: str, change: float, p: float, n: int) -> str:
    size = f"{change:+.3f}" if metric == "answer_nll" else f"{100 * change:+.1f}"
    return f"{size} (p {p:.3f}, n {n})"


def _change(base: list[float], other: list[float]) -> tuple[float, float, int]:
    """Mean of ``other - base`` over the questions where both are defined, its paired p, and that count."""
    pairs = [(x, y) for x, y in zip(base, other, strict=True) if not (math.isnan(x) or math.isnan(y))]
    change = sum(y - x for x, y in pairs) / len(pairs) if pairs else math.nan
    return change, paired_permutation_test(base, other), len(pairs)


def against_reference(done: dict[str, Any], reference: str = "gumbel") -> str:
    """Each other objective against ``reference`` on the transfer set, paired per question on the values
    averaged over each objective's seeds, with Holm's adjustment of the answer-NLL p-values over the
    label-free objectives (the supervised control is shown, outside the family). Empty without the
    reference row or another objective. Rows at the end: each later seed of the reference against its
    first, the scale of the differences one run to the next makes."""
    runs = per_question_runs(done["rows"], done["k"])
    if reference not in runs:
        return ""
    metrics = [m for m in runs[reference][0]["per_question"] if m == "answer_nll" or m.startswith("R@")]
    ref = {m: _values(seed_mean_values(runs[reference], m) or []) for m in metrics}
    others = {row: rs for row, rs in runs.items() if row not in ("zero-shot", reference)}
    if not others:
        return ""
    changes = {row: {m: _change(ref[m], _values(seed_mean_values(rs, m) or [])) for m in metrics} for row, rs in others.items()}
    adjusted = holm({row: c["answer_nll"][1] for row, c in changes.items() if row != "supervised"})
    lines = [
        f"\n## Each objective against {title(reference)} ({len(runs[reference])} seeds)\n",
        f"Paired per question on each objective's values averaged over its seeds: the other objective minus "
        f"{title(reference)} (so a negative answer-NLL change is in the other's favour), the permutation p, and "
        "Holm's adjustment of the answer-NLL p over the label-free objectives. The p is over questions: the "
        "variation between seeds is not in it.\n",
        "| objective | seeds | " + " | ".join(f"{m} | Holm p" if m == "answer_nll" else m for m in metrics) + " |",
        "|---|---|" + "---|" * (len(metrics) + 1),
    ]
    for row, c in changes.items():
        cells = [f"{title(row)} | {len(others[row])}"]
        for m in metrics:
            cells.append(_cell(m, *c[m]))
            if m == "answer_nll":
                cells.append(f"{adjusted[row]:.3f}" if row in adjusted else "(uses labels)")
        lines.append("| " + " | ".join(cells) + " |")
    first, *later = runs[reference]
    for run in later:  # how far apart the reference's own seeds are: the scale of run-to-run noise
        cells = [f"{title(reference)} seed {run.get('seed')} against its seed {first.get('seed')} | 1"]
        for m in metrics:
            cells.append(_cell(m, *_change(_values(first["per_question"][m]), _values(run["per_question"][m]))))
            if m == "answer_nll":
                cells.append("(a seed)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", default="hotpotqa-cross-fresh,hotpotqa-adapted-grid", help="comma-separated groups")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--work", default="runs/experiments", help="the run folders of experiments/run.py")
    p.add_argument("--source", default=SOURCE)
    p.add_argument("--rows", default="", help="comma-separated <row>.seed<s>: only these trained rows (default: all)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    only = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    try:
        for group in [g.strip() for g in args.groups.split(",") if g.strip()]:
            transfer(
                group,
                results=Path(args.results),
                work=Path(args.work),
                source=args.source,
                progress=not args.no_progress,
                only=only,
            )
            print((Path(args.results) / group / "transfer.md").read_text())
        if Path(args.results).resolve() == (HERE / "results").resolve():
            from paper import planned_rows, sync_readme  # run as a script: experiments/ is on the path

            for readme in (HERE / "README.md", HERE.parent / "README.md", HERE.parent / "docs" / "results.md"):
                sync_readme(readme, args.results, planned_rows(HERE))  # the transfer blocks, from transfer.json
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
