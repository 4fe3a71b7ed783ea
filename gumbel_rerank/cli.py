"""Command line: parsing and printing only; the work happens in the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from . import objectives
from .config import Config
from .config import load as _load
from .report import before_after_table, fmt


def load_config(path: str | Path | None, overrides: list[str]) -> Config:
    """The config, checked down to the objective's name (before any model loads)."""
    cfg = _load(path, overrides)
    objectives.check(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = load_config(args.config, args.overrides)
    print(
        f"gumbel-rerank train: objective={cfg.objective.name} reader={cfg.reader.model} ({cfg.reader.layout}) "
        f"reranker={cfg.reranker.model} ({cfg.reranker.kind}) data={cfg.data.source} -> {cfg.train.out_dir}"
    )
    start = time.perf_counter()
    result = train(cfg, progress=not args.quiet, resume=args.resume)
    table = before_after_table(result.before, result.after)
    (result.run_dir / "report.md").write_text(
        f"# {cfg.train.out_dir}\n\nHeld-out questions, before and after training.\n\n{table}\n"
    )
    print(f"\nHeld-out metrics, zero-shot reranker vs trained ({cfg.data.num_eval} questions, top-k={cfg.objective.k}):")
    print(table)
    selection = json.loads((result.run_dir / "report.json").read_text()).get("selection")
    if selection:
        print(
            f"\nlabel-free selection ({selection['select']}): lowest validation answer NLL "
            f"{selection['selected_val_loss']:.4f} at step {selection['selected_step']} of {selection['points']} "
            f"evaluations; curves: {result.run_dir / 'selection.png'}"
        )
    print(
        f"\n{result.seconds_per_step:.2f} s/step, {result.skipped_steps} skipped steps, "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    print(
        f"report: {result.run_dir / 'report.md'}  reranker: {result.run_dir / 'reranker'}  "
        f"log: {result.run_dir / 'metrics.jsonl'}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Zero-shot vs trained reranker of a run, with run files and a paired test per metric."""
    from .data import load_splits
    from .evaluate import score_all
    from .rerankers import Reranker
    from .runfiles import write_comparison
    from .train import build_reader, evaluate

    run_dir = Path(args.run_dir)
    cfg = load_config(run_dir / "config.yaml", args.overrides)
    _, held_out = load_splits(cfg.data)
    reader = build_reader(cfg.reader) if cfg.eval.generate else None
    zero_shot = Reranker.from_pretrained(
        cfg.reranker.model, kind=cfg.reranker.kind, max_length=cfg.reranker.max_length, temperature=cfg.reranker.temperature
    )
    trained = Reranker.from_pretrained(str(run_dir / "reranker"))
    scores_before = score_all(zero_shot, held_out, batch_size=cfg.eval.batch_size)
    scores_after = score_all(trained, held_out, batch_size=cfg.eval.batch_size)
    before = evaluate(cfg, zero_shot, reader, held_out, scores=scores_before)
    after = evaluate(cfg, trained, reader, held_out, scores=scores_after)
    print(before_after_table(before, after))
    tests = write_comparison(run_dir / "eval", held_out, scores_before, scores_after, cfg.eval.ks)
    print("\npaired permutation test per question (two-sided p-value of the change):")
    for name, row in tests.items():
        print(f"  {name:<16} {fmt(row['before'])} -> {fmt(row['after'])}   p = {row['p_value']:.4f}")
    print(f"run files, qrels, per-question metrics and metrics.json: {run_dir / 'eval'}")
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
    print(
        f"answer NLL per token, {cfg.reader.model} ({cfg.reader.layout}), {min(args.questions, len(held_out))} "
        "held-out questions (lower = the reader finds the answer more likely):"
    )
    for view, value in result.items():
        print(f"  {view:<38} {fmt(value)}")
    print("gradient of the answer NLL w.r.t. each doc's weight, all docs at w=0.5 (negative = the reader wants it):")
    for kind, value in weight_gradients(reader, held_out[: args.questions]).items():
        print(f"  {kind:<38} {value:+.3f}")
    if args.gradient_signal:
        _print_gradient_signal(cfg, reader, held_out)
    return 0


def _print_gradient_signal(cfg: Any, reader: Any, examples: list[Any]) -> None:
    from .rerankers import Reranker
    from .signal import gradient_agreement

    reranker = Reranker.from_pretrained(
        cfg.reranker.model, kind=cfg.reranker.kind, max_length=cfg.reranker.max_length, temperature=cfg.reranker.temperature
    )
    r = gradient_agreement(cfg.objective, reranker, reader, examples, batch_size=cfg.train.batch_size)
    print(
        f"cosine between reranker gradients ({cfg.objective.name}, batch {cfg.train.batch_size}, "
        f"{cfg.objective.samples} sample(s), {r['pairs']} pairs; 1 = the same direction):"
    )
    print(f"  same batch, independent Gumbel draws   {r['noise']['mean']:+.3f} (sd {r['noise']['sd']:.3f})")
    print(f"  two disjoint batches                   {r['minibatch']['mean']:+.3f} (sd {r['minibatch']['sd']:.3f})")


def cmd_compare(args: argparse.Namespace) -> int:
    """Every objective from the same reranker on the same batches, reader and candidates."""
    from .compare import compare, parse_objectives
    from .report import group_table, load_results

    cfg = load_config(args.config, args.overrides)
    names = parse_objectives(args.objectives)
    out = args.out or str(Path(cfg.train.out_dir).parent / "compare")
    print(
        f"gumbel-rerank compare: {', '.join(names)}; reader={cfg.reader.model} ({cfg.reader.layout}) "
        f"reranker={cfg.reranker.model} ({cfg.reranker.kind}) data={cfg.data.source} -> {out}"
    )
    result = compare(cfg, names, out, progress=not args.quiet, on_result=lambda text: print(text, flush=True))
    print(group_table(load_results(result.out_dir)))
    print(
        f"table: {result.out_dir / 'table.md'} (table.csv, summary.json)  plots: {result.out_dir / 'recall.png'}, "
        f"{result.out_dir / 'loss_gap.png'}  runs: {result.out_dir}/<objective>.seed{cfg.train.seed}/"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    out = export(args.run_dir, args.out_dir, overwrite=args.overwrite)
    print(
        f"exported to {out}: loads with sentence_transformers "
        f"{'CrossEncoder' if (out / 'modules.json').exists() and not (out / '1_Pooling').exists() else 'SentenceTransformer'}"
        f"({str(out)!r}); model card: {out / 'README.md'}"
    )
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    """Rerank every question's candidates from a file; TREC run + JSONL with the top k."""
    from .export import load_reranker
    from .rerank_file import rerank_file

    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    reranker = load_reranker(args.model, kind=args.kind)
    out = Path(args.output or Path(args.input).with_suffix(""))
    n = rerank_file(reranker, args.input, out, top_k=args.top_k, batch_size=args.batch_size, progress=not args.quiet)
    print(f"reranked {n} questions; top {args.top_k}: {out}.run (TREC) and {out}.jsonl")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .export import load_reranker
    from .serve import Limits, make_server

    reranker = load_reranker(args.model, kind=args.kind)
    limits = Limits(max_body_bytes=args.max_body_bytes, max_documents=args.max_documents, max_chars=args.max_chars)
    server, batcher = make_server(reranker, args.host, args.port, limits=limits, model_name=args.model)
    print(
        f"serving {args.model} ({reranker.kind}) on http://{args.host}:{server.server_address[1]}  "
        "POST /rerank, GET /health (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        batcher.close()
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a dataset file to our JSONL schema and print what it holds and what was skipped."""
    from .data import convert
    from .data.schema import write_jsonl

    loaded = convert.load(args.input, allow_no_docs=args.pool > 0)
    if args.pool > 0:
        from .data.pool import pool_from_corpus
        from .rerankers import Reranker

        corpus = convert.load(args.corpus).examples if args.corpus else []
        encoder = Reranker.from_pretrained(args.encoder, kind="bi")
        loaded.examples, stats = pool_from_corpus(loaded.examples, corpus, n=args.pool, encoder=encoder)
        print(
            f"pools: {args.pool} candidates per question from {stats.passages} passages; "
            f"gold passage not retrieved for {stats.gold_not_retrieved} of {stats.questions} questions"
        )
    write_jsonl(loaded.examples, args.output)
    s = convert.summary(loaded)
    d = s["docs_per_question"]
    print(f"{args.input}: formats {s['formats']}")
    print(
        f"  questions {s['questions']}, docs per question {d['min']}-{d['max']} (mean {d['mean']:.2f}), "
        f"gold per question {s['gold_per_question']:.2f}, bridge per question {s['bridge_per_question']:.2f}, "
        f"with a bridge doc {s['share_with_bridge']:.1%}, without any gold doc {s['questions_without_gold']}, "
        f"missing a gold doc {s['questions_missing_a_gold_doc']}"
    )
    print(
        f"  excluded from bridge metrics (gold docs but none holds the answer, e.g. yes/no comparisons): "
        f"{s['excluded_from_bridge_metrics']}"
    )
    for message in s["first_warnings"]:
        print(f"    e.g. {message}")
    print(f"  skipped {s['skipped']}: {s['skipped_by_reason'] or 'none'}")
    for message in s["first_errors"]:
        print(f"    e.g. {message}")
    print(f"  written: {args.output}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gumbel-rerank", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    from . import __version__

    p.add_argument("--version", action="version", version=f"gumbel-rerank {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a reranker; prints held-out metrics before and after")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. objective.tau=0.3 train.steps=50")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in train.out_dir (same result as an uninterrupted run)",
    )
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
    m = sub.add_parser("compare", help="train several objectives on the same data and reader; one table and plots")
    m.add_argument("config")
    m.add_argument("overrides", nargs="*")
    m.add_argument(
        "--objectives", default=",".join(objectives.OBJECTIVES), help=f"comma-separated, from: {', '.join(objectives.OBJECTIVES)}"
    )
    m.add_argument("--out", help="output directory (default: next to train.out_dir, named compare)")
    m.add_argument("-q", "--quiet", action="store_true")
    m.set_defaults(func=cmd_compare)
    x = sub.add_parser("export", help="write a sentence-transformers directory with a model card")
    x.add_argument("run_dir", help="a training run directory (or its reranker/ directory)")
    x.add_argument("out_dir", help="a new or empty folder (or an earlier export, with --overwrite)")
    x.add_argument("--overwrite", action="store_true", help="replace an earlier export in out_dir")
    x.set_defaults(func=cmd_export)
    rr = sub.add_parser("rerank", help="rerank the candidates of a question file; TREC run + JSONL")
    rr.add_argument("model", help="run directory, saved or exported reranker, packaged name or hub id")
    rr.add_argument("--input", required=True, help="questions with candidates (any format `data convert` reads)")
    rr.add_argument("--top-k", type=int, default=10)
    rr.add_argument("--output", help="output prefix (default: the input path without its extension)")
    rr.add_argument("--kind", default="cross", choices=["cross", "bi"], help="for a model that is not ours")
    rr.add_argument("--batch-size", type=int, default=32)
    rr.add_argument("-q", "--quiet", action="store_true")
    rr.set_defaults(func=cmd_rerank)
    sv = sub.add_parser("serve", help="HTTP service: POST /rerank, GET /health")
    sv.add_argument("model")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--kind", default="cross", choices=["cross", "bi"])
    sv.add_argument("--max-documents", type=int, default=1000)
    sv.add_argument("--max-chars", type=int, default=20_000, help="per query or document")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20)
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


if __name__ == "__main__":
    sys.exit(main())
