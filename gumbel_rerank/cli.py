"""Command line: parsing and printing only; the work happens in the library."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from .config import ConfigError
from .config import load as load_config
from .data.schema import DataError

METRIC_ORDER = ("R@2", "R@4", "R@5", "FullSupport@2", "FullSupport@4", "FullSupport@5", "RR", "nDCG@4", "nDCG@5",
                "answer_R@2", "answer_R@4", "answer_R@5", "bridge_R@2", "bridge_R@4", "bridge_R@5", "bridge_RR", "EM", "F1")


def _fmt(value: Any) -> str:
    return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def comparison_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    names = [m for m in METRIC_ORDER if m in before or m in after]
    lines = ["| metric | before | after | change |", "|---|---|---|---|"]
    for m in names:
        b, a = before.get(m), after.get(m)
        delta = a - b if isinstance(a, float) and isinstance(b, float) else None
        lines.append(f"| {m} | {_fmt(b)} | {_fmt(a)} | {'+' if delta and delta > 0 else ''}{_fmt(delta)} |")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = load_config(args.config, args.overrides)
    print(f"gumbel-rerank train: objective={cfg.objective.name} reader={cfg.reader.model} ({cfg.reader.layout}) "
          f"reranker={cfg.reranker.model} ({cfg.reranker.kind}) data={cfg.data.source} -> {cfg.train.out_dir}")
    start = time.perf_counter()
    result = train(cfg, progress=not args.quiet)
    table = comparison_table(result.before, result.after)
    (result.run_dir / "report.md").write_text(f"# {cfg.train.out_dir}\n\nHeld-out questions, before and after "
                                              f"training.\n\n{table}\n")
    print(f"\nHeld-out metrics, zero-shot reranker vs trained ({cfg.data.num_eval} questions, top-k={cfg.objective.k}):")
    print(table)
    print(f"\n{result.seconds_per_step:.2f} s/step, {result.skipped_steps} skipped steps, "
          f"{time.perf_counter() - start:.0f} s in all")
    print(f"report: {result.run_dir / 'report.md'}  reranker: {result.run_dir / 'reranker'}  "
          f"log: {result.run_dir / 'metrics.jsonl'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .rerankers import Reranker
    from .train import build_reader, evaluate

    run_dir = Path(args.run_dir)
    cfg = load_config(run_dir / "config.yaml", args.overrides)
    from .data import load_splits

    _, held_out = load_splits(cfg.data)
    reader = build_reader(cfg.reader) if cfg.eval.generate else None
    zero_shot = Reranker.from_pretrained(cfg.reranker.model, kind=cfg.reranker.kind,
                                         max_length=cfg.reranker.max_length, temperature=cfg.reranker.temperature)
    before = evaluate(cfg, zero_shot, reader, held_out)
    after = evaluate(cfg, Reranker.from_pretrained(str(run_dir / "reranker")), reader, held_out)
    print(comparison_table(before, after))
    if args.json:
        Path(args.json).write_text(json.dumps({"before": before, "after": after}, indent=2))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """How much the reader's answer likelihood depends on the gold docs (answer NLL per token)."""
    from .data import load_splits
    from .probe import reader_dependence, weight_gradients
    from .train import build_reader

    cfg = load_config(args.config, args.overrides)
    _, held_out = load_splits(cfg.data)
    reader = build_reader(cfg.reader)
    result = reader_dependence(reader, held_out[: args.questions])
    print(f"answer NLL per token, {cfg.reader.model} ({cfg.reader.layout}), {min(args.questions, len(held_out))} "
          "held-out questions (lower = the reader finds the answer more likely):")
    for view, value in result.items():
        print(f"  {view:<38} {_fmt(value)}")
    print("gradient of the answer NLL w.r.t. each doc's weight, all docs at w=0.5 (negative = the reader wants it):")
    for kind, value in weight_gradients(reader, held_out[: args.questions]).items():
        print(f"  {kind:<38} {value:+.3f}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gumbel-rerank", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a reranker; prints held-out metrics before and after")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. objective.tau=0.3 train.steps=50")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="zero-shot vs trained reranker of a run: recall at k and reader EM/F1")
    e.add_argument("run_dir")
    e.add_argument("overrides", nargs="*")
    e.add_argument("--json", help="also write the metrics to this file")
    e.set_defaults(func=cmd_eval)
    r = sub.add_parser("probe", help="answer NLL with gold / answer-only / bridge-only / distractor docs")
    r.add_argument("config")
    r.add_argument("overrides", nargs="*")
    r.add_argument("--questions", type=int, default=40)
    r.set_defaults(func=cmd_probe)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)  # key=value overrides may come after options
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"gumbel-rerank: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad inputs caught at the library boundary, with the fix in the message
        print(f"gumbel-rerank: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
