"""One planned row, timed before and after a change: the same config trained by two code trees, one after the other.

    git worktree add ../before <old commit>
    python bench/row_time.py --before ../before --config experiments/configs/hotpotqa/gumbel.yaml \
        --out bench/results/row_time.json
    python bench/row_time.py --before ../before-tree --config experiments/configs/hotpotqa/gumbel.yaml \
        --after-overrides reader.doc_dtype=auto --out bench/results/row_time_defaults.json \
        train.steps=30 data.num_eval=40   # the after tree with its own defaults where the config pins the old ones

Each tree runs ``gumbel-rerank train CONFIG`` (its own package, imported from its own root) into a
fresh folder under ``--work``; the wall time is measured around the whole process. The table gives
both wall times, their ratio, where the new tree's time went (``report.json`` ``seconds``: start
evaluation, steps, validation, checkpoints, final evaluation) and every held-out metric of both.
Run it on a quiet machine: the two runs must not share the cores with anything else.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENTRY = "import sys; from gumbel_rerank.cli import main; sys.exit(main())"


def run(tree: Path, config: Path, out_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train ``config`` with the package of ``tree``; its wall seconds and report.json."""
    cmd = [sys.executable, "-c", ENTRY, "train", str(config), f"train.out_dir={out_dir}", *overrides, "--overwrite", "-q"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{tree}: train failed:\n{done.stderr[-3000:]}")
    report = json.loads((out_dir / "report.json").read_text())
    return {"tree": str(tree), "wall_seconds": wall, "report": report}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="the code tree before the change (a git worktree)")
    p.add_argument("--after", default=str(ROOT), help="the code tree after it (default: this one)")
    p.add_argument("--config", required=True, help="a row config, relative to the trees' roots")
    p.add_argument("--work", default="/tmp/gumbel_rerank_row_time")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "row_time.json"))
    p.add_argument("overrides", nargs="*", help="key=value overrides for both runs (e.g. train.steps=50)")
    p.add_argument(
        "--after-overrides",
        default="",
        help="comma-separated key=value overrides for the after run only: a default the new tree changed but the "
        "row's config pins (e.g. reader.doc_dtype=auto)",
    )
    args = p.parse_args()
    runs = {}
    for name in ("before", "after"):
        tree = Path(getattr(args, name)).resolve()
        extra = [o for o in args.after_overrides.split(",") if o] if name == "after" else []
        runs[name] = run(tree, Path(args.config), Path(args.work) / name, [*args.overrides, *extra])
        print(f"{name}: {runs[name]['wall_seconds']:.0f} s ({tree})", flush=True)
    ratio = runs["after"]["wall_seconds"] / runs["before"]["wall_seconds"]
    record = {"config": args.config, "overrides": args.overrides, "after_overrides": args.after_overrides, "ratio": ratio}
    Path(args.out).write_text(json.dumps({**record, **runs}, indent=2))
    print(f"\nrow {args.config} {' '.join(args.overrides)}: after / before wall time = {ratio:.2f}")
    parts = runs["after"]["report"].get("seconds", {})
    if parts:
        print("after, by part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()))
    b, a = runs["before"]["report"]["after"], runs["after"]["report"]["after"]
    print("| held-out metric (selected checkpoint) | before the change | after |\n|---|---|---|")
    for metric in [m for m in a if m in b and isinstance(a[m], float)]:
        print(f"| {metric} | {b[metric]:.4f} | {a[metric]:.4f} |")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
