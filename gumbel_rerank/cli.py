"""gumbel-rerank: train the reranker of a RAG system from the frozen reader's own answer loss, with no
relevance labels (Gumbel Reranking, ACL 2025), beside its rivals on the same batches; then evaluate,
export and serve it.

example:
  gumbel-rerank train configs/default.yaml train.steps=100   # G-Rerank on the embedded data, before/after
"""

# This module parses arguments only; the commands, which print, are in gumbel_rerank.commands.

from __future__ import annotations

import argparse
import logging
import sys

from . import objectives
from .commands import (
    cmd_adapt,
    cmd_audit,
    cmd_compare,
    cmd_convert,
    cmd_eval,
    cmd_export,
    cmd_probe,
    cmd_rerank,
    cmd_serve,
    cmd_train,
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gumbel-rerank", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true")
    from . import __version__

    p.add_argument("--version", action="version", version=f"gumbel-rerank {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a reranker; prints held-out metrics before and after")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. objective.tau=0.3 train.steps=50")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    resume_help = "continue from the last checkpoint in train.out_dir (same result as an uninterrupted run)"
    t.add_argument("--resume", action="store_true", help=resume_help)
    t.add_argument("--overwrite", action="store_true", help="replace the run train.out_dir holds (only that run's files)")
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
    r.add_argument(
        "--gradient-signal",
        action="store_true",
        help="also the cosine between reranker gradients of two Gumbel draws / two batches",
    )
    r.set_defaults(func=cmd_probe)
    u = sub.add_parser("audit", help="before training: can this reader teach this reranker? a table and a verdict")
    u.add_argument("config")
    u.add_argument("overrides", nargs="*")
    u.add_argument("--data", help="audit the questions of this file instead of the config's split")
    u.add_argument("--questions", type=_positive, help="only the first N questions")
    u.add_argument("--split", default="validation", choices=("validation", "held-out", "train"), help="the config's split")
    u.add_argument("--subsets", type=_positive, default=4, help="random k-subsets per question")
    u.add_argument("--out", help="where audit.json goes (default: train.out_dir/audit.json)")
    u.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    u.set_defaults(func=cmd_audit)
    m = sub.add_parser("compare", help="train several objectives on the same data and reader; one table and plots")
    m.add_argument("config")
    m.add_argument("overrides", nargs="*")
    m.add_argument(
        "--objectives", default=",".join(objectives.OBJECTIVES), help=f"comma-separated, from: {', '.join(objectives.OBJECTIVES)}"
    )
    m.add_argument("--out", help="output directory (default: next to train.out_dir, named compare)")
    m.add_argument("-q", "--quiet", action="store_true")
    m.set_defaults(func=cmd_compare)
    a = sub.add_parser("adapt-reader", help="a LoRA adapter that fits the frozen reader to the task (no doc labels)")
    a.add_argument("config")
    a.add_argument("overrides", nargs="*")
    a.add_argument("--steps", type=int, default=200)
    a.add_argument("--batch-size", type=_positive, default=2)
    a.add_argument("--lr", type=float, default=2e-4)
    a.add_argument("--rank", type=_positive, default=8, help="LoRA rank")
    a.add_argument("--eval-questions", type=_positive, default=100, help="held-out questions in the before/after report")
    a.add_argument("--out", help="run folder (default: next to train.out_dir, named adapter)")
    a.add_argument("--resume", action="store_true")
    a.add_argument("-q", "--quiet", action="store_true")
    a.set_defaults(func=cmd_adapt)
    x = sub.add_parser("export", help="write a sentence-transformers directory with a model card")
    x.add_argument("run_dir", help="a training run directory (or its reranker/ directory)")
    x.add_argument("out_dir", help="a new or empty folder (or an earlier export, with --overwrite)")
    x.add_argument("--overwrite", action="store_true", help="replace an earlier export in out_dir")
    x.add_argument("--onnx", action="store_true", help="also onnx/model.onnx and its int8 variant, for onnxruntime serving")
    x.set_defaults(func=cmd_export)
    rr = sub.add_parser("rerank", help="rerank the candidates of a question file; TREC run + JSONL")
    rr.add_argument("model", help="run directory, saved or exported reranker, packaged name or hub id")
    rr.add_argument("--input", required=True, help="questions with candidates (any format `data convert` reads)")
    rr.add_argument("--top-k", type=int, default=10)
    rr.add_argument("--output", help="output prefix (default: the input path without its extension)")
    rr.add_argument("--kind", choices=["cross", "bi"], help="only for a model that is not ours (ours say their kind)")
    rr.add_argument("--batch-size", type=int, default=32)
    rr.add_argument(
        "--backend",
        choices=["torch", "onnx", "onnx-int8"],
        default="torch",
        help="onnx / onnx-int8: score an export's onnx/ graphs with onnxruntime (export --onnx makes them)",
    )
    rr.add_argument("-q", "--quiet", action="store_true")
    rr.set_defaults(func=cmd_rerank)
    sv = sub.add_parser("serve", help="HTTP service: POST /rerank (and /v1/rerank), GET /health")
    sv.add_argument("model")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=_port, default=8000, help="1-65535, or 0 for any free port")
    sv.add_argument("--kind", choices=["cross", "bi"], help="only for a model that is not ours (ours say their kind)")
    sv.add_argument(
        "--backend",
        choices=["torch", "onnx", "onnx-int8"],
        default="torch",
        help="onnx / onnx-int8: score an export's onnx/ graphs with onnxruntime (export --onnx makes them)",
    )
    sv.add_argument("--max-documents", type=_positive, default=1000)
    sv.add_argument("--max-chars", type=_positive, default=20_000, help="per query or document")
    sv.add_argument("--max-body-bytes", type=_positive, default=1 << 20)
    sv.add_argument("--batch-pairs", type=_positive, default=64, help="pairs per forward pass across requests")
    sv.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    sv.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take before it gets 503")
    sv.add_argument("--max-queue", type=_positive, default=64, help="requests waiting to be scored; more get 503")
    sv.add_argument("--max-connections", type=_positive, default=64)
    sv.add_argument("--bf16", action="store_true", help="score under bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    sv.set_defaults(func=cmd_serve)
    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("convert", help="detect the format, convert to our JSONL schema, print a summary")
    c.add_argument("input")
    c.add_argument("--output", required=True)
    c.add_argument("--pool", type=int, default=0, help="retrieve this many candidates per question (NQ-open style)")
    c.add_argument("--corpus", help="more passages to retrieve from (any supported file)")
    c.add_argument("--encoder", default="all-minilm-l6-v2", help="bi-encoder used to build the pools")
    c.set_defaults(func=cmd_convert)
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
    except (ValueError, FileNotFoundError) as err:  # ConfigError, DataError and bad inputs: the fix is in the message
        print(f"gumbel-rerank: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder where a file belongs, no permission, a full disk: one line that names the path
        where = f"{err.filename}: " if err.filename else ""
        print(f"gumbel-rerank: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
