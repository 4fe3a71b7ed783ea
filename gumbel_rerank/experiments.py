"""The paper-reproduction table: groups of row configs, several seeds, results that survive a crash.

Layout (``experiments/`` in the repository)::

    plan.yaml                     group -> seeds, in the order the groups run
    configs/<group>/<row>.yaml    one complete training config per table row
    results/<group>/runs/*.json   one file per (row, seed), written atomically when the run ends
    results/<group>/table.md      mean and spread over seeds, written by :func:`report`

Every row of a group must share the data, the reader and the reranker config (the zero-shot row and
the paired tests need the same questions and the same start); rows differ in the objective and its
settings. A group's rows share one loaded reader (with its doc cache), one on-disk teacher cache and
one memo of the reader's generated answers (keyed by question and doc set, so two rankings with the
same top-k reuse one generation). A (row, seed) whose result file exists is skipped, so an
interrupted run continues where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import Config, ConfigError
from .config import load as load_config
from .data import Example, load_splits
from .evaluate import per_question, reader_metrics, retrieval_metrics, score_all
from .metrics import exact_match, f1_score
from .objectives import OBJECTIVES, TeacherCache
from .readers.base import Reader
from .rerankers import Reranker
from .train import build_reader, check_data, train

ORDER = ["gumbel", "adist", "emdr", "pdist", "loop", "lsr", "supervised"]  # table order of the objectives
PER_QUESTION = ("R@5", "bridge_R@5", "FullSupport@5")  # kept per question for paired tests


@dataclass(frozen=True)
class Row:
    name: str  # file name without .yaml
    cfg: Config


def load_plan(path: str | Path) -> dict[str, list[int]]:
    """``plan.yaml``: a mapping group -> list of seeds."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict) or not all(
        isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        for seeds in raw.values()
    ):
        raise ConfigError(f"{path}: must map each group name to a non-empty list of integer seeds, e.g. hotpotqa: [0, 1, 2]")
    return {str(group): list(seeds) for group, seeds in raw.items()}


def load_group(group_dir: str | Path) -> list[Row]:
    """The group's row configs, in table order; refuses rows that do not share data, reader and reranker."""
    files = sorted(Path(group_dir).glob("*.yaml"))
    if not files:
        raise ConfigError(f"{group_dir}: no row configs (*.yaml)")
    rows = [Row(f.stem, load_config(f)) for f in files]
    first = rows[0]
    for row in rows[1:]:
        for section in ("data", "reader", "reranker", "eval"):
            if getattr(row.cfg, section) != getattr(first.cfg, section):
                raise ConfigError(f"{group_dir}/{row.name}.yaml: its {section} section differs from {first.name}.yaml; "
                                  "every row of a group must share data, reader, reranker and eval")
    if 5 not in first.cfg.eval.ks:
        raise ConfigError(f"{group_dir}: eval.ks must include 5 (the table reports Recall@5), got {list(first.cfg.eval.ks)}")
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(rows, key=lambda r: (rank.get(r.cfg.objective.name, len(ORDER)), r.name))


def _write_json(path: Path, value: Any) -> None:
    """Atomic: a crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(_finite(value), f, indent=1)
    os.replace(f.name, path)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and value != value else value


class AnswerMemo:
    """EM/F1 of the reader on each ranking's top-k docs, generating once per (question, doc set)."""

    def __init__(self, reader: Reader, cfg: Config) -> None:
        self.reader, self.cfg = reader, cfg
        self.answers: dict[tuple[str, tuple[int, ...]], tuple[float, float]] = {}

    def __call__(self, examples: Sequence[Example], scores: Sequence[Sequence[float]], k: int) -> dict[str, float]:
        ev = self.cfg.eval
        # the hard top-k's doc set (ties to the lower index, as hard_topk)
        keys = [(ex.id, tuple(sorted(sorted(range(len(s)), key=lambda i: -s[i])[:k])))
                for ex, s in zip(examples, scores, strict=True)]
        todo = [i for i, key in enumerate(keys) if key not in self.answers]
        if todo:
            qa = reader_metrics(self.reader, [examples[i] for i in todo], [scores[i] for i in todo], k=k,
                                batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens)
            for i, pred in zip(todo, qa["predictions"], strict=True):
                self.answers[keys[i]] = (exact_match(pred, examples[i].answers), f1_score(pred, examples[i].answers))
        em, f1 = zip(*(self.answers[key] for key in keys), strict=True)
        return {"EM": sum(em) / len(em), "F1": sum(f1) / len(f1), "generated": len(todo)}


def _result(examples_held: list[Example], held: list[list[float]], train_set: list[Example], mine: list[list[float]],
            ks: Sequence[int], memo: AnswerMemo | None, k: int) -> dict[str, Any]:
    out: dict[str, Any] = {"held_out": retrieval_metrics(examples_held, held, ks),
                           "mining": retrieval_metrics(train_set, mine, ks)}
    if memo is not None:
        out["held_out"].update(memo(examples_held, held, k))
    rows = per_question(examples_held, held, [5])
    out["per_question"] = {m: [r[m] for r in rows] for m in PER_QUESTION}
    out["held_out_scores"] = held
    return out


def _steps(run_dir: Path) -> list[dict[str, float]]:
    log = run_dir / "metrics.jsonl"
    keep = ("step", "loss", "hard_loss", "tau", "lr", "seconds", "mask_sum", "mask_distinct", "mask_overlap")
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return [{k: v for k, v in row.items() if k in keep} for row in lines if "loss" in row]  # not the eval points


def run_group(group: str, rows: list[Row], seeds: Sequence[int], results: str | Path, work: str | Path, *,
              reader: Reader | None = None, progress: bool = True,
              on_result: Callable[[str], None] | None = None) -> Path:
    """Train every (row, seed) not yet in ``results/<group>/runs``; return the group's results folder."""
    cfg0 = rows[0].cfg
    out = Path(results) / group
    runs = out / "runs"
    scratch = Path(work) / group
    train_set, held_out = load_splits(cfg0.data)
    check_data(cfg0, train_set, held_out)
    for row in rows:
        check_data(row.cfg, train_set, held_out)
    reader = reader or build_reader(cfg0.reader)
    memo = AnswerMemo(reader, cfg0) if cfg0.eval.generate else None
    teachers = TeacherCache(scratch / "teacher_cache")
    torch.manual_seed(0)  # a cross-encoder's fresh head: the same start on every rerun
    start = Reranker.from_pretrained(cfg0.reranker.model, kind=cfg0.reranker.kind,
                                     max_length=cfg0.reranker.max_length, temperature=cfg0.reranker.temperature)
    ks = cfg0.eval.ks
    zero = runs / "zero-shot.json"
    if zero.exists():
        before = json.loads(zero.read_text())["held_out"]
    else:
        res = _result(held_out, score_all(start, held_out, batch_size=cfg0.eval.batch_size), train_set,
                      score_all(start, train_set, batch_size=cfg0.eval.batch_size), ks, memo, cfg0.objective.k)
        res.update(row="zero-shot", seed=None, seconds=0.0, steps=[], config=None)
        _write_json(zero, res)
        before = res["held_out"]
        if on_result:
            on_result(f"{group}/zero-shot")
    for seed in seeds:  # every row gets seed 0 before any row gets seed 1
        for row in rows:
            path = runs / f"{row.name}.seed{seed}.json"
            if path.exists():
                continue
            run_dir = scratch / f"{row.name}.seed{seed}"
            cfg = dataclasses.replace(
                row.cfg, train=dataclasses.replace(row.cfg.train, seed=seed, out_dir=str(run_dir)),
                eval=dataclasses.replace(row.cfg.eval, generate=False),  # answers come from the shared memo
            )
            trained = copy.deepcopy(start)
            t0 = time.perf_counter()
            result = train(cfg, progress=progress, reranker=trained, reader=reader, teachers=teachers, before=before)
            seconds = time.perf_counter() - t0
            res = _result(held_out, result.held_out_scores, train_set,
                          score_all(trained, train_set, batch_size=cfg.eval.batch_size), ks, memo, cfg.objective.k)
            res.update(row=row.name, seed=seed, seconds=seconds, seconds_per_step=result.seconds_per_step,
                       skipped_steps=result.skipped_steps, steps=_steps(run_dir), config=row.cfg.to_dict())
            _write_json(path, res)
            if on_result:
                on_result(f"{group}/{row.name} seed {seed}: R@{max(ks)} {res['held_out'][f'R@{max(ks)}']:.3f} "
                          f"({seconds:.0f} s)")
    return out


def run_plan(experiments: str | Path, *, groups: Sequence[str] = (), results: str | Path | None = None,
             work: str | Path = "runs/experiments", progress: bool = True, max_seeds: int | None = None) -> list[Path]:
    """Run the plan's groups (all, or those named) in plan order, reusing one reader per reader config.

    ``max_seeds`` runs only each group's first seeds (a first pass over every group; rerun without it
    to add the remaining seeds)."""
    root = Path(experiments)
    plan = {g: seeds[:max_seeds] if max_seeds else seeds for g, seeds in load_plan(root / "plan.yaml").items()}
    unknown = [g for g in groups if g not in plan]
    if unknown:
        raise ConfigError(f"unknown group(s) {unknown}; plan.yaml has {', '.join(plan)}")
    chosen = [g for g in plan if not groups or g in groups]
    rows = {g: load_group(root / "configs" / g) for g in chosen}  # every config is checked before any model loads
    results = Path(results) if results is not None else root / "results"
    progress_file = Path(work) / "progress.log"
    progress_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def note(text: str) -> None:
        line = f"[{time.perf_counter() - t0:7.0f} s] {text}"
        print(line, flush=True)
        with progress_file.open("a") as f:
            f.write(line + "\n")

    readers: dict[Any, Reader] = {}
    done = []
    for group in chosen:
        reader_cfg = rows[group][0].cfg.reader
        if reader_cfg not in readers:
            readers.clear()  # one reader in memory at a time
            readers[reader_cfg] = build_reader(reader_cfg)
        note(f"{group}: {len(rows[group])} rows x seeds {plan[group]}")
        done.append(run_group(group, rows[group], plan[group], results, work, reader=readers[reader_cfg],
                              progress=progress, on_result=note))
        report(results, root)
        note(f"{group}: done, tables in {results / group}")
    return done


# ---------------------------------------------------------------------------------------------
# Tables and plots

PAPER = {  # Huang et al. (ACL 2025), as quoted in ../shared/docs/METHOD.md; Recall@5 in percent
    "hotpotqa": {"R@5": {"gumbel": 84.4, "emdr": 78.7, "pdist": 78.1, "loop": 72.5, "adist": 71.3},
                 "mining_R@5": {"gumbel": 83.3, "emdr": 78.0, "pdist": 76.8, "loop": 71.7, "adist": 71.3},
                 "bridge_R@5": {"gumbel": 72.2, "emdr": 61.8, "pdist": 60.2}},
    "musique": {"R@5": {"gumbel": 60.7, "emdr": 56.6}},
    "2wiki": {"R@5": {"gumbel": 80.8, "loop": 80.4}},
}
METRICS = ("R@2", "R@5", "FullSupport@5", "bridge_R@5", "bridge_RR", "bridge_nDCG@5", "EM", "F1",
           "mining_R@5", "mining_bridge_R@5")


def load_results(group_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Row name -> its runs (one per seed), zero-shot first."""
    by_row: dict[str, list[dict[str, Any]]] = {}
    for f in sorted((group_dir / "runs").glob("*.json")):
        res = json.loads(f.read_text())
        by_row.setdefault(res["row"], []).append(res)
    rank = {name: i for i, name in enumerate(["zero-shot", *ORDER])}  # then the other rows (ablations) by name
    return {name: by_row[name] for name in sorted(by_row, key=lambda n: (rank.get(n, len(rank)), n))}


def _value(res: dict[str, Any], metric: str) -> float | None:
    if metric == "seconds":
        return res.get("seconds")
    if metric.startswith("mining_"):
        return res["mining"].get(metric[len("mining_"):])
    return res["held_out"].get(metric)


def summarise(runs: list[dict[str, Any]], metric: str) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation and count over seeds (None if the metric is missing)."""
    vals = [v for v in (_value(r, metric) for r in runs) if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def _cell(s: tuple[float, float, int] | None, scale: float = 100.0) -> str:
    if s is None:
        return "n/a"
    m, sd, n = s
    return f"{m * scale:.1f}" if n == 1 else f"{m * scale:.1f} ± {sd * scale:.1f}"


def paired_p(base: list[dict[str, Any]], other: list[dict[str, Any]], metric: str) -> float | None:
    """Paired permutation test on per-question values averaged over each row's seeds."""

    def avg(runs: list[dict[str, Any]]) -> list[float]:
        cols = [r["per_question"][metric] for r in runs]
        out = []
        for vals in zip(*cols, strict=True):
            real = [v for v in vals if v is not None]
            out.append(sum(real) / len(real) if real else float("nan"))
        return out

    a, b = avg(base), avg(other)
    keep = [i for i in range(len(a)) if a[i] == a[i] and b[i] == b[i]]
    if not keep:
        return None
    return _permutation_p(tuple(a[i] for i in keep), tuple(b[i] for i in keep))


@functools.lru_cache(maxsize=1024)
def _permutation_p(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """One report asks for the same pair in table.md, the README table and the claims: test it once."""
    from .runfiles import paired_permutation_test

    return paired_permutation_test(a, b)


def reference_row(by_row: dict[str, list[dict[str, Any]]]) -> str:
    """The row every other row is tested against: G-Rerank, or in an ablation group (no G-Rerank row) the default."""
    return "gumbel" if "gumbel" in by_row else "default"


def _seeds(name: str, runs: list[dict[str, Any]]) -> str:
    return "-" if name == "zero-shot" else str(len(runs))


def group_table(group: str, by_row: dict[str, list[dict[str, Any]]]) -> str:
    ref = reference_row(by_row)
    base = by_row.get(ref)
    head = ["row", "seeds", *METRICS, f"p R@5 vs {ref}", f"p bridge R@5 vs {ref}", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, runs in by_row.items():
        seeds = _seeds(name, runs)
        cells = [_cell(summarise(runs, m)) for m in METRICS]
        ps = []
        for metric in ("R@5", "bridge_R@5"):
            p = paired_p(base, runs, metric) if base and name != ref else None
            ps.append("" if p is None else f"{p:.3f}")
        secs = summarise(runs, "seconds") if name != "zero-shot" else None
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " | " + " | ".join(ps) + " | "
                     + ("" if secs is None else f"{secs[0]:.0f}") + " |")
    return "\n".join(lines)


def _plots(out: Path, group: str, by_row: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(by_row)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("R@5", "bridge_R@5"), strict=True):
        stats = [summarise(by_row[n], metric) for n in names]
        means = [0.0 if s is None else s[0] for s in stats]
        errs = [0.0 if s is None else s[1] for s in stats]
        ax.bar(names, means, yerr=errs, capsize=3, color=["#999" if n == "zero-shot" else "#3a7" for n in names])
        for i, n in enumerate(names):  # each seed as a dot
            seeds = [v for v in (_value(r, metric) for r in by_row[n]) if v is not None]
            ax.scatter([i] * len(seeds), seeds, s=10, color="#222", zorder=3)
        ax.set(ylabel=f"held-out {metric} (mean ± sd over seeds)", ylim=(0, 1), title=f"{group}: {metric}")
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall.png", dpi=110)
    plt.close(fig)

    gap_rows = {n: runs for n, runs in by_row.items() if any(s.get("hard_loss") is not None for r in runs for s in r["steps"])}
    if not gap_rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [3, 3, 2]})
    axes[0].set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])  # up to 20 rows, each its own colour
    for name, runs in gap_rows.items():
        steps = sorted({s["step"] for r in runs for s in r["steps"]})
        soft = [_mean_at(runs, step, "loss") for step in steps]
        hard = [_mean_at(runs, step, "hard_loss") for step in steps]
        line = axes[0].plot(steps, _smooth(soft), label=f"{name} soft")[0]
        axes[0].plot(steps, _smooth(hard), linestyle="--", color=line.get_color())
        axes[1].plot(steps, _smooth([h - s for h, s in zip(hard, soft, strict=True)]), label=name, color=line.get_color())
    axes[0].set(xlabel="step", ylabel="answer NLL per token", title="soft mask (solid) vs hard top-k (dashed)")
    axes[1].axhline(0, color="#888", lw=0.8)
    axes[1].set(xlabel="step", ylabel="hard - soft loss", title="soft-train / hard-inference gap (moving avg 4)")
    axes[1].legend(fontsize=7)
    late = {n: g[1] for n, g in ((n, gap_summary(r)) for n, r in gap_rows.items()) if g is not None}
    axes[2].barh(list(late), list(late.values()), color="#a63")
    axes[2].axvline(0, color="#888", lw=0.8)
    axes[2].set(xlabel="hard - soft, last quarter of steps", title="gap at the end of training")
    axes[2].tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(out / "loss_gap.png", dpi=110)
    plt.close(fig)


def _mean_at(runs: list[dict[str, Any]], step: int, key: str) -> float:
    vals = [s[key] for r in runs for s in r["steps"] if s["step"] == step and s.get(key) is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _smooth(values: list[float], window: int = 4) -> list[float]:
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1) : i + 1] if v == v]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def gap_summary(runs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """Mean hard - soft loss over the first and the last quarter of training (all seeds)."""
    pairs = [(s["step"], s["hard_loss"] - s["loss"]) for r in runs for s in r["steps"] if s.get("hard_loss") is not None]
    if not pairs:
        return None
    last = max(p[0] for p in pairs)
    q = max(last // 4, 1)
    early = [g for st, g in pairs if st <= q]
    late = [g for st, g in pairs if st > last - q]
    return sum(early) / len(early), sum(late) / len(late)


def report(results: str | Path, experiments: str | Path | None = None, *, readme: str | Path | None = None) -> Path:
    """table.md / table.csv / recall.png / loss_gap.png per group, and results/summary.md against the paper;
    with ``readme``, also its generated table blocks (:func:`sync_readme`)."""
    results = Path(results)
    groups = {}
    for group_dir in sorted(p for p in results.iterdir() if (p / "runs").is_dir()):
        by_row = load_results(group_dir)
        first = next((r for runs in by_row.values() for r in runs if r.get("config")), None)
        if first is None:  # nothing trained yet
            continue
        groups[group_dir.name] = by_row
        table = group_table(group_dir.name, by_row)
        gaps = [(n, gap_summary(r)) for n, r in by_row.items()]
        gap_lines = [f"| {n} | {g[0]:.3f} | {g[1]:.3f} |" for n, g in gaps if g is not None]
        text = (f"# {group_dir.name}\n\n{_describe(first['config'], by_row)}\n\nPercent; mean ± sample sd over seeds; "
                "`mining_` = the training questions themselves (their labels unused); p: paired permutation test "
                "against G-Rerank (ablations: against the default) on per-question values averaged over seeds.\n\n"
                + table + "\n")
        if gap_lines:
            text += ("\n## Soft-mask vs hard-top-k loss (answer NLL per token, hard minus soft)\n\n"
                     "| row | first quarter of steps | last quarter |\n|---|---|---|\n" + "\n".join(gap_lines) + "\n")
        (group_dir / "table.md").write_text(text)
        _csv(group_dir / "table.csv", by_row)
        _plots(group_dir, group_dir.name, by_row)
    (results / "summary.md").write_text(summary(groups))
    if readme is not None:
        sync_readme(readme, results)
    return results / "summary.md"


NAMES = {"zero-shot": "zero-shot", "gumbel": "**G-Rerank**", "adist": "ADist", "emdr": "EMDR2", "pdist": "PDist",
         "loop": "LOOP", "lsr": "LSR (REPLUG)", "supervised": "supervised (uses labels)"}


def readme_table(group: str, by_row: dict[str, list[dict[str, Any]]]) -> str:
    """The compact table the README shows for a group: the main metrics, the paper's numbers where
    the paper has them for this very group, a p-value against G-Rerank (ablations: against the
    default) and, for ablations, the soft/hard loss gap."""
    ref = reference_row(by_row)
    ablation = ref == "default"
    paper = PAPER.get(group, {})
    cols = [("R@5", "R@5"), ("paper", "R@5"), ("bridge R@5", "bridge_R@5"), ("paper", "bridge_R@5"),
            ("FullSupport@5", "FullSupport@5"), ("mining R@5", "mining_R@5"), ("paper", "mining_R@5"),
            ("R@2", "R@2"), ("bridge MRR", "bridge_RR"), ("F1", "F1")]  # (header, metric)
    cols = [(h, m) for h, m in cols if h != "paper" or m in paper]
    head = ["variant" if ablation else "objective", "seeds", *(h for h, _ in cols),
            "p R@5 vs " + ("default" if ablation else "G-Rerank")]
    head += ["hard - soft loss, first / last quarter", "mean mask_sum"] if ablation else ["train s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, runs in by_row.items():
        cells = [_seeds(name, runs)]
        for h, m in cols:
            ref_value = paper.get(m, {}).get(name) if h == "paper" else None
            cells.append(("" if ref_value is None else f"{ref_value:.1f}") if h == "paper" else _cell(summarise(runs, m)))
        p = paired_p(by_row[ref], runs, "R@5") if ref in by_row and name != ref else None
        cells.append("" if p is None else f"{p:.2f}" if p >= 0.01 else f"{p:.3f}")
        if ablation:
            gap = gap_summary(runs)
            cells.append("" if gap is None else f"{gap[0]:+.2f} / {gap[1]:+.2f}")
            sums = [st["mask_sum"] for r in runs for st in r["steps"] if st.get("mask_sum") is not None]
            cells.append(f"{sum(sums) / len(sums):.2f}" if sums else "")
        else:
            secs = summarise(runs, "seconds") if name != "zero-shot" else None
            cells.append("" if secs is None else f"{secs[0]:.0f}")
        lines.append(f"| {NAMES.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLE_BLOCK = re.compile(r"(<!-- table: (\S+) [^>]*-->\n)(.*?)(<!-- /table -->)", re.DOTALL)


def sync_readme(readme: str | Path, results: str | Path) -> list[str]:
    """Rewrite every ``<!-- table: GROUP ... -->`` ... ``<!-- /table -->`` block of ``readme`` with
    :func:`readme_table` of that group's committed results; returns the groups written. A block
    naming a group without results is an error (the README would show numbers nothing produced)."""
    readme, results = Path(readme), Path(results)
    text = readme.read_text()
    done: list[str] = []

    def fill(m: re.Match[str]) -> str:
        group = m.group(2)
        if not (results / group / "runs").is_dir():
            raise ConfigError(f"{readme}: a table block names group {group!r}, which has no results in {results}")
        done.append(group)
        return m.group(1) + readme_table(group, load_results(results / group)) + "\n" + m.group(4)

    new = TABLE_BLOCK.sub(fill, text)
    if new != text:
        readme.write_text(new)
    return done


def _describe(cfg: dict[str, Any], by_row: dict[str, list[dict[str, Any]]]) -> str:
    d, r, rd, o, t = cfg["data"], cfg["reranker"], cfg["reader"], cfg["objective"], cfg["train"]
    held = len(next(iter(by_row.values()))[0]["held_out_scores"])
    return (f"Data `{d['source']}` ({d['num_train']} training questions, {held} held-out, >= {d['min_docs']} docs each); "
            f"reranker {r['model']} ({r['kind']}); reader {rd['model']} ({rd['layout']} layout); "
            f"{t['steps']} steps x batch {t['batch_size']} per row (lr {t['lr']}), k={o['k']}.")


def _csv(path: Path, by_row: dict[str, list[dict[str, Any]]]) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "seeds", *(f"{m}_{s}" for m in (*METRICS, "seconds") for s in ("mean", "sd"))])
        for name, runs in by_row.items():
            cells: list[Any] = []
            for m in (*METRICS, "seconds"):
                s = summarise(runs, m)
                cells += ["", ""] if s is None else [round(s[0], 5), round(s[1], 5)]
            w.writerow([name, len(runs), *cells])


def paper_numbers(group: str) -> dict[str, dict[str, float]] | None:
    """The paper's numbers a group is compared with: its dataset's (variants such as
    ``hotpotqa-gemma`` use the dataset before the dash), none for ablation groups."""
    if group.endswith("-ablations"):
        return None
    return PAPER.get(group) or PAPER.get(group.split("-")[0])


def summary(groups: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """Our numbers beside the paper's, and the two headline claims checked, for every group but ablations."""
    lines = ["# Reproduction summary (generated by `python experiments/run.py --report`)", "",
             "Recall in percent, mean ± sd over seeds. Paper: Huang et al. (ACL 2025) as quoted in METHOD.md "
             "(FiD-Large reader, RankT5 reranker, full datasets); groups named `<dataset>-<variant>` are "
             "compared with their dataset's numbers.", ""]
    datasets = list(PAPER)
    order = sorted(groups, key=lambda g: (datasets.index(b) if (b := g.split("-")[0]) in datasets else len(datasets), g))
    for group in order:
        by_row, paper = groups[group], paper_numbers(group)
        if paper is None:
            continue
        metrics = list(paper)
        lines += [f"## {group}", "", "| objective | seeds | " + " | ".join(f"{m} ours | {m} paper" for m in metrics)
                  + " |", "|---" * (2 + 2 * len(metrics)) + "|"]
        for name, runs in by_row.items():
            cells = []
            for m in metrics:
                ref = paper[m].get(name)
                cells += [_cell(summarise(runs, m)), "" if ref is None else f"{ref:.1f}"]
            lines.append(f"| {name} | {_seeds(name, runs)} | " + " | ".join(cells) + " |")
        lines += ["", *claims(by_row, bridge_gain="bridge_R@5" in paper), ""]
    return "\n".join(lines)


PAPER_BRIDGE_GAIN = 72.2 - 61.8  # HotpotQA bridge-doc Recall@5, G-Rerank over EMDR2 (METHOD.md)


def claims(by_row: dict[str, list[dict[str, Any]]], *, bridge_gain: bool = True) -> list[str]:
    """G-Rerank above each rival on held-out Recall@5; its bridge Recall@5 gain over the best rival and
    over EMDR2 (beside the paper's +10.4 when ``bridge_gain``: the paper reports it for HotpotQA only)."""
    if "gumbel" not in by_row:
        return []
    g = summarise(by_row["gumbel"], "R@5")
    gb = summarise(by_row["gumbel"], "bridge_R@5")
    rivals = [n for n in by_row if n in OBJECTIVES and n not in ("gumbel", "supervised")]
    ref = f"(paper, HotpotQA: +{PAPER_BRIDGE_GAIN:.1f} over EMDR2)" if bridge_gain else "(no paper figure)"
    out = []
    for n in rivals:
        r = summarise(by_row[n], "R@5")
        p = paired_p(by_row["gumbel"], by_row[n], "R@5")
        if g and r:
            verdict = "above" if g[0] > r[0] else ("equal to" if g[0] == r[0] else "below")
            out.append(f"- G-Rerank R@5 {verdict} {n}: {100 * (g[0] - r[0]):+.1f} points"
                       + ("" if p is None else f" (p = {p:.3f})"))
    best = max(((n, summarise(by_row[n], "bridge_R@5")) for n in rivals), key=lambda x: x[1][0] if x[1] else -1.0,
               default=None)
    if gb and best and best[1]:
        out.append(f"- bridge-doc R@5 gain over the best rival ({best[0]}): {100 * (gb[0] - best[1][0]):+.1f} points")
    emdr = summarise(by_row["emdr"], "bridge_R@5") if "emdr" in by_row else None
    if gb and emdr:
        p = paired_p(by_row["gumbel"], by_row["emdr"], "bridge_R@5")
        out.append(f"- bridge-doc R@5 gain over EMDR2: {100 * (gb[0] - emdr[0]):+.1f} points"
                   + ("" if p is None else f" (p = {p:.3f})") + f" {ref}")
    return out
