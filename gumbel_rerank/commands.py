"""The commands behind the command line: each loads, calls the library and prints; nothing else."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from . import devices, objectives
from .config import Config
from .config import load as _load
from .evaluation.tables import before_after_table, fmt
from .jsonsafe import write_json


def load_config(path: str | Path | None, overrides: list[str]) -> Config:
    """The config, checked down to the objective's name (before any model loads)."""
    cfg = _load(path, overrides)
    objectives.check(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from .training.loop import train

    cfg = load_config(args.config, args.overrides)
    print(
        f"gumbel-rerank train: objective={cfg.objective.name} reader={cfg.reader.model} ({cfg.reader.layout}) "
        f"reranker={cfg.reranker.model} ({cfg.reranker.kind}) data={cfg.data.source} -> {cfg.train.out_dir}"
    )
    start = time.perf_counter()
    result = train(cfg, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
    table = before_after_table(result.before, result.after, result.p_values)
    (result.run_dir / "report.md").write_text(
        f"# {cfg.train.out_dir}\n\nHeld-out questions, before and after training; p: paired permutation test "
        f"per question (two-sided).\n\n{table}\n"
    )
    print(
        f"\nHeld-out metrics, zero-shot reranker vs trained ({cfg.data.num_eval} questions, top-k={cfg.objective.k}; "
        "p: paired permutation test per question):"
    )
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
    from .evaluation.evaluate import evaluate, score_all
    from .evaluation.runfiles import write_comparison
    from .readers import build_reader
    from .rerankers import Reranker

    run_dir = Path(args.run_dir)
    cfg = load_config(run_dir / "config.yaml", args.overrides)
    _, held_out = load_splits(cfg.data)
    reader = build_reader(cfg.reader, device=devices.pick(cfg.train.device)) if cfg.eval.generate else None
    zero_shot = Reranker.from_config(cfg.reranker)
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
        write_json(args.json, {"before": before, "after": after}, indent=2)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The reader's answer NLL under views of the docs, the start's and the per-doc teacher's recall, the
    subset signal; a table, audit.json and a one-line verdict."""
    from .evaluation.audit import audit, table

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(cfg.train.out_dir) / "audit.json"
    result = audit(cfg, data=args.data, questions=args.questions, split=args.split, subsets=args.subsets, progress=not args.quiet)
    s, setup = result["summary"], result["setup"]
    print(
        f"audit: {setup['reader']} ({setup['layout']}) teaching {setup['reranker']} ({setup['kind']}), k = {s['k']}, "
        f"{s['questions']} questions of {setup['data']}; NLL in nats per answer token"
    )
    print(table(s))
    write_json(out, result, indent=1)
    print(f"audit.json: {out}")
    print(f"verdict: {s['verdict']}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """How much the reader's answer likelihood depends on the gold docs (answer NLL per token)."""
    from .data import load_splits
    from .evaluation.probe import reader_dependence, weight_gradients
    from .readers import build_reader

    cfg = load_config(args.config, args.overrides)
    _, held_out = load_splits(cfg.data)
    reader = build_reader(cfg.reader, device=devices.pick(cfg.train.device))
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
    from .evaluation.signal import gradient_agreement
    from .rerankers import Reranker

    reranker = Reranker.from_config(cfg.reranker)
    r = gradient_agreement(cfg.objective, reranker, reader, examples, batch_size=cfg.train.batch_size)
    print(
        f"cosine between reranker gradients ({cfg.objective.name}, batch {cfg.train.batch_size}, "
        f"{cfg.objective.samples} sample(s), {r['pairs']} pairs; 1 = the same direction):"
    )
    print(f"  same batch, independent Gumbel draws   {r['noise']['mean']:+.3f} (sd {r['noise']['sd']:.3f})")
    print(f"  two disjoint batches                   {r['minibatch']['mean']:+.3f} (sd {r['minibatch']['sd']:.3f})")


def cmd_compare(args: argparse.Namespace) -> int:
    """Every objective from the same reranker on the same batches, reader and candidates."""
    from .comparison.compare import compare, parse_objectives
    from .comparison.report import group_table, load_results

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
    from .serving.export import export

    out = export(args.run_dir, args.out_dir, overwrite=args.overwrite, onnx=args.onnx)
    print(
        f"exported to {out}: loads with sentence_transformers "
        f"{'CrossEncoder' if (out / 'modules.json').exists() and not (out / '1_Pooling').exists() else 'SentenceTransformer'}"
        f"({str(out)!r}); model card: {out / 'README.md'}"
    )
    if args.onnx:
        print(f"ONNX: {out / 'onnx' / 'model.onnx'} and model_qint8.onnx (serve them: --backend onnx / onnx-int8)")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    """Rerank every question's candidates from a file; TREC run + JSONL with the top k."""
    from .serving.export import load_reranker
    from .serving.rerank_file import read_candidates, rerank_file

    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    examples = read_candidates(args.input)  # every record checked before the model loads
    reranker = load_reranker(args.model, kind=args.kind, backend=args.backend)
    out = Path(args.output or Path(args.input).with_suffix(""))
    n = rerank_file(reranker, examples, out, top_k=args.top_k, batch_size=args.batch_size, progress=not args.quiet)
    print(f"reranked {n} questions; top {args.top_k}: {out}.run (TREC) and {out}.jsonl")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.export import load_reranker
    from .serving.http import make_server
    from .serving.protocol import Limits

    reranker = load_reranker(args.model, kind=args.kind, backend=args.backend)
    names = {"batch_pairs": "max_batch_pairs", "timeout": "timeout_s"}  # the flags' names for Limits' fields
    given = {names.get(k, k): v for k, v in vars(args).items() if names.get(k, k) in Limits.__dataclass_fields__}
    limits = Limits(**given)
    try:
        server, batcher = make_server(
            reranker, args.host, args.port, limits=limits, model_name=args.model, precision="bf16" if args.bf16 else "fp32"
        )  # an ONNX reranker scores in its export's precision
    except OSError as err:  # the port is taken, or the host is not this machine's
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}; pick another --port") from None
    print(
        f"serving {args.model} ({reranker.kind}) on http://{args.host}:{server.server_address[1]}  "
        "POST /rerank or /v1/rerank, GET /health (Ctrl-C stops)",
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


def cmd_adapt(args: argparse.Namespace) -> int:
    """A LoRA adapter for the config's reader, trained on the training answers with all candidates."""
    from .training.adapt import AdaptSettings, adapt_reader

    cfg = load_config(args.config, args.overrides)
    flags = {k: v for k, v in vars(args).items() if k in AdaptSettings.__dataclass_fields__ and k != "out_dir"}
    settings = AdaptSettings(**flags, out_dir=args.out or str(Path(cfg.train.out_dir).parent / "adapter"))
    print(
        f"gumbel-rerank adapt-reader: {cfg.reader.model} ({cfg.reader.layout}), LoRA rank {settings.rank}, "
        f"{settings.steps} steps x {settings.batch_size} questions from {cfg.data.source} -> {settings.out_dir}"
    )
    result = adapt_reader(cfg, settings, progress=not args.quiet, resume=args.resume)
    print(f"\nHeld-out questions ({settings.eval_questions} at most), the reader before and after adaptation:")
    print(before_after_table(result.before, result.after))
    print(f"\nadapter: {result.run_dir / 'adapter'}  (use it: reader.adapter={result.run_dir / 'adapter'})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a dataset file to our JSONL schema and print what it holds and what was skipped."""
    from .data import convert
    from .data.schema import write_jsonl

    loaded = convert.load(args.input, allow_no_docs=args.pool > 0)
    if not loaded.examples:
        why = f"e.g. {loaded.errors[0]}" if loaded.errors else "the file holds no records"
        raise ValueError(f"{args.input}: no question could be converted ({len(loaded.errors)} skipped; {why}); nothing written")
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
