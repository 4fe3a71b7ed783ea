"""The paper's side of the reproduction: its numbers, the claims checked against ours, summary.md and
the generated tables of experiments/README.md. The sweeps themselves run in the library
(:mod:`gumbel_rerank.comparison.plan`, :mod:`gumbel_rerank.comparison.sweep`,
:mod:`gumbel_rerank.comparison.report`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from gumbel_rerank.comparison.grid import grid_choice, load_grid
from gumbel_rerank.comparison.plan import load_plan_entries
from gumbel_rerank.comparison.report import (
    Runs,
    bootstrap_ci,
    cell,
    ci_cell,
    load_results,
    markdown_table,
    paired_p,
    per_question_runs,
    reference_row,
    seeds_cell,
    start_table,
    summarise,
)
from gumbel_rerank.comparison.sweep import load_group
from gumbel_rerank.comparison.writer import gap_summary
from gumbel_rerank.comparison.writer import write_report as write_group_report
from gumbel_rerank.config import ConfigError
from gumbel_rerank.evaluation.runfiles import holm
from gumbel_rerank.objectives import OBJECTIVES, title

HERE = Path(__file__).parent
# the rivals the paper's claim is about (G-Rerank above each); a group without one of them cannot decide
# it. Our own later objectives (reinforce) are compared when a group has them, never required.
PAPER_RIVALS = ("adist", "emdr", "pdist", "loop", "lsr")

PAPER = {  # Huang et al. (ACL 2025), Tables 1-3 (docs/method.md); Recall@5 in percent
    "hotpotqa": {
        "R@5": {"gumbel": 84.4, "emdr": 78.7, "pdist": 78.1, "loop": 72.5, "adist": 71.3},
        "mining_R@5": {"gumbel": 83.3, "emdr": 78.0, "pdist": 76.8, "loop": 71.7, "adist": 71.3},
        "bridge_R@5": {"gumbel": 72.2, "emdr": 61.8, "pdist": 60.2},
    },
    "musique": {"R@5": {"gumbel": 60.7, "emdr": 56.6}},
    "2wiki": {"R@5": {"gumbel": 80.8, "loop": 80.4}},
}
PAPER_BRIDGE_GAIN = 72.2 - 61.8  # HotpotQA bridge-doc Recall@5, G-Rerank over EMDR2
TABLE_BLOCK = re.compile(r"(<!-- table: (\S+) [^>]*-->\n)(.*?)(<!-- /table -->)", re.DOTALL)
CLAIMS_BLOCK = re.compile(r"(<!-- claims: (\S+) [^>]*-->\n)(.*?)(<!-- /claims -->)", re.DOTALL)
START_BLOCK = re.compile(r"(<!-- start: (\S+) [^>]*-->\n)(.*?)(<!-- /start -->)", re.DOTALL)
TRANSFER_BLOCK = re.compile(r"(<!-- transfer: (\S+) [^>]*-->\n)(.*?)(<!-- /transfer -->)", re.DOTALL)
TIME_BLOCK = re.compile(r"(<!-- time: plan [^>]*-->\n)(.*?)(<!-- /time -->)", re.DOTALL)


def display(name: str) -> str:
    return f"**{title(name)}**" if name == "gumbel" else title(name)


def readme_table(group: str, by_row: Runs) -> str:
    """The compact table experiments/README.md shows for a group: the main metrics, the paper's
    numbers where the paper has them for this very group, a p-value against G-Rerank (ablations:
    against the default) and, for ablations, the soft/hard loss gap."""
    ref = reference_row(by_row)
    ablation = ref == "default"
    paper = PAPER.get(group, {})
    cols = [
        ("R@5", "R@5"),
        ("95% CI", "R@5"),
        ("paper", "R@5"),
        ("bridge R@5", "bridge_R@5"),
        ("paper", "bridge_R@5"),
        ("FullSupport@5", "FullSupport@5"),
        ("mining R@5", "mining_R@5"),
        ("paper", "mining_R@5"),
        ("R@2", "R@2"),
        ("MRR", "RR"),
        ("bridge MRR", "bridge_RR"),
        ("answer NLL", "answer_nll"),
    ]  # (header, metric)
    cols = [(h, m) for h, m in cols if h != "paper" or m in paper]
    tested = ("R@5",) if ablation else ("R@5", "bridge_R@5")  # paired p against the reference row
    head = [
        "variant" if ablation else "objective",
        "seeds",
        *(h for h, _ in cols),
        "p R@5 vs " + ("default" if ablation else "G-Rerank"),
        *(f"p {m.replace('_', ' ')}" for m in tested[1:]),
    ]
    head += ["hard - soft loss, first / last quarter", "mean mask_sum"] if ablation else ["train s"]
    rows = []
    for name, runs in by_row.items():
        cells = [seeds_cell(name, runs)]
        for h, m in cols:
            if h == "paper":
                ref_value = paper.get(m, {}).get(name)
                cells.append("" if ref_value is None else f"{ref_value:.1f}")
            elif h == "95% CI":
                cells.append(ci_cell(bootstrap_ci(runs, m)))
            else:
                cells.append(cell(summarise(runs, m), m))
        for metric in tested:
            p = paired_p(by_row[ref], runs, metric) if ref in by_row and name != ref else None
            cells.append("" if p is None else f"{p:.2f}" if p >= 0.01 else f"{p:.3f}")
        if ablation:
            gap = gap_summary(runs)
            cells.append("" if gap is None else f"{gap[0]:+.2f} / {gap[1]:+.2f}")
            sums = [st["mask_sum"] for r in runs for st in r["steps"] if st.get("mask_sum") is not None]
            cells.append(f"{sum(sums) / len(sums):.2f}" if sums else "")
        else:
            secs = summarise(runs, "seconds") if name != "zero-shot" else None
            cells.append("" if secs is None else f"{secs[0]:.0f}")
        rows.append([display(name), *cells])
    return markdown_table(head, rows)


def sync_readme(readme: str | Path, results: str | Path, planned: dict[str, int] | None = None) -> list[str]:
    """Rewrite every ``<!-- table: GROUP ... -->`` ... ``<!-- /table -->`` block of ``readme`` with
    :func:`readme_table` of that group's committed results, every ``<!-- claims: GROUP ... -->``
    ... ``<!-- /claims -->`` block with its :func:`claims`, every ``<!-- start: GROUP ... -->`` ...
    ``<!-- /start -->`` block with its change against the start and the positive control
    (:func:`~gumbel_rerank.comparison.report.start_table`), every ``<!-- transfer: GROUP ... -->`` ...
    ``<!-- /transfer -->`` block with the same table of the group's transfer.json (experiments/transfer.py:
    the trained rows on other questions), and a ``<!-- time: plan ... -->`` ...
    ``<!-- /time -->`` block with :func:`time_table` of every group against ``planned``; returns the
    groups written. A block naming a group without results is an error (the page would show numbers
    nothing produced), and so is a time block without ``planned``."""
    readme, results = Path(readme), Path(results)
    text = readme.read_text()
    done: list[str] = []

    def filler(kind: str, body: Callable[[str, Runs], str]) -> Callable[[re.Match[str]], str]:
        def fill(m: re.Match[str]) -> str:
            group = m.group(2)
            if not (results / group / "runs").is_dir():
                raise ConfigError(f"{readme}: a {kind} block names group {group!r}, which has no results in {results}")
            done.append(group)
            return m.group(1) + body(group, load_grid(results / group)) + "\n" + m.group(4)

        return fill

    def fill_transfer(m: re.Match[str]) -> str:
        return m.group(1) + transfer_table(results / m.group(2) / "transfer.json") + "\n" + m.group(4)

    def fill_time(m: re.Match[str]) -> str:
        if planned is None:
            raise ConfigError(f"{readme}: a time block needs the plan's rows (planned_rows)")
        return m.group(1) + "\n".join(time_table(load_groups(results), planned)) + m.group(3)

    # a grid group (rows <objective>-lr<LR>) is claimed about, and shown against its start, with each
    # objective at the LR its validation NLL chose; its table shows every row it ran
    chosen_claims = filler("claims", lambda group, by_row: claims_text(group, as_chosen(by_row)))
    new = CLAIMS_BLOCK.sub(chosen_claims, TABLE_BLOCK.sub(filler("table", readme_table), text))
    new = START_BLOCK.sub(filler("start", lambda group, by_row: start_table(as_chosen(by_row))), new)
    new = TRANSFER_BLOCK.sub(fill_transfer, new)
    new = TIME_BLOCK.sub(fill_time, new)
    if new != text:
        readme.write_text(new)
    return done


def transfer_table(path: Path) -> str:
    """The change of each trained row against the start on a group's second held-out set, from its
    transfer.json, as :func:`~gumbel_rerank.comparison.report.start_table` shows the group's own."""
    if not path.is_file():
        raise ConfigError(f"a transfer block names {path}, which does not exist: run experiments/transfer.py first")
    done = json.loads(path.read_text())
    return start_table(per_question_runs(done["rows"], done["k"]))


def as_chosen(by_row: Runs) -> Runs:
    """A grid group as one row per objective at its chosen LR (:func:`grid_choice`); any other group as it is."""
    rows, chosen = grid_choice(by_row)
    return chosen if rows else by_row


def load_groups(results: Path) -> dict[str, Runs]:
    """Every group of ``results`` that has result files, by name."""
    return {d.name: load_results(d) for d in sorted(results.iterdir()) if (d / "runs").is_dir()}


def claims_text(group: str, by_row: Runs) -> str:
    """A claims block's lines: :func:`claims` against the group's dataset's paper figures."""
    return "\n".join(claims(by_row, bridge_gain="bridge_R@5" in (paper_numbers(group) or {})))


def paper_numbers(group: str) -> dict[str, dict[str, float]] | None:
    """The paper's numbers a group is compared with: its dataset's (variants such as
    ``hotpotqa-gemma`` use the dataset before the dash), none for ablation groups."""
    if group.endswith("-ablations"):
        return None
    return PAPER.get(group) or PAPER.get(group.split("-")[0])


def summary(groups: dict[str, Runs], planned: dict[str, int] | None = None) -> str:
    """Our numbers beside the paper's, and the two headline claims checked, for every group but ablations."""
    lines = [
        "# Reproduction summary (generated by `python experiments/run.py --report`)",
        "",
        "Recall in percent, mean ± sd over seeds. Paper: Huang et al. (ACL 2025), see docs/method.md "
        "(FiD-Large reader, RankT5 reranker, full datasets); groups named `<dataset>-<variant>` are "
        "compared with their dataset's numbers.",
        "",
    ]
    datasets = list(PAPER)
    order = sorted(groups, key=lambda g: (datasets.index(b) if (b := g.split("-")[0]) in datasets else len(datasets), g))
    for group in order:
        by_row, paper = groups[group], paper_numbers(group)
        if paper is None:
            continue
        metrics = list(paper)
        head = ["objective", "seeds", *(f"{m} {side}" for m in metrics for side in ("ours", "paper"))]
        rows = []
        for name, runs in by_row.items():
            cells = [name, seeds_cell(name, runs)]
            for m in metrics:
                ref = paper[m].get(name)
                cells += [cell(summarise(runs, m)), "" if ref is None else f"{ref:.1f}"]
            rows.append(cells)
        lines += [f"## {group}", "", markdown_table(head, rows), "", claims_text(group, by_row), ""]
    time = time_table(groups, planned)
    return "\n".join([*lines, "## Time", "", *time] if time else lines)


def planned_rows(root: str | Path = HERE) -> dict[str, int]:
    """Trained rows the plan of ``root`` (``plan.yaml``, ``configs/<group>/``) asks for: rows x seeds per group."""
    root = Path(root)
    return {
        group: sum(len(row_seeds.get(row.name, seeds)) for row in load_group(root / "configs" / group))
        for group, (seeds, row_seeds) in load_plan_entries(root / "plan.yaml").items()
    }


def time_table(groups: dict[str, Runs], planned: dict[str, int] | None = None) -> list[str]:
    """Each group's trained rows and their measured seconds (a row's own time: training, its periodic
    evaluations and final scoring; the group's setup, reader loading and zero-shot row not included).
    With ``planned`` (:func:`planned_rows`) every planned group has a line, rows read "done of planned",
    and a last line estimates the rest from the time measured so far."""
    secs = {
        g: [r["seconds"] for name, runs in by_row.items() if name != "zero-shot" for r in runs if r.get("seconds")]
        for g, by_row in groups.items()
    }
    planned = planned or {}
    names = sorted({g for g, s in secs.items() if s} | set(planned))
    if not names:
        return []
    done = [s for g in (planned or names) for s in secs.get(g, [])]  # with a plan: its groups' rows only
    mean_all = sum(done) / len(done) if done else 0.0

    def line(name: str, took: list[float], of: int | None) -> list[str | int]:
        count = f"{len(took)} of {of}" if of is not None else len(took)
        if not took:
            return [name, count, "", "", ""]
        return [name, count, f"{sum(took) / 3600:.1f}", f"{sum(took) / len(took) / 60:.0f}", f"{max(took) / 60:.0f}"]

    rows = [line(g, secs.get(g, []), planned.get(g)) for g in names]
    lines = [
        "Seconds each trained row took (`seconds` in its result file, measured on the 2-core CPU machine the plan "
        "ran on): training, its periodic evaluations and its final scoring. Each group's setup in a sitting "
        "(loading the reader, encoding the docs into its cache, the teachers, the zero-shot row) comes on top.",
        "",
    ]
    if planned:
        rows.append(line("**all**", done, sum(planned.values())))
        left = {g: n - len(secs.get(g, [])) for g, n in planned.items() if n > len(secs.get(g, []))}
        hours = sum(n * (sum(secs[g]) / len(secs[g]) if secs.get(g) else mean_all) for g, n in left.items()) / 3600
        n_left = sum(left.values())
        s = "s" if n_left != 1 else ""
        lines[0] += (
            f" Still to run: {n_left} row{s} ({', '.join(f'{g} {n}' for g, n in sorted(left.items()))}), "
            f"about {hours:.1f} h of row time at each group's mean so far (the plan's mean where a group has none)."
            if left
            else " Every planned row has run."
        )
    return [*lines, markdown_table(["group", "trained rows", "total h", "mean min per row", "longest min"], rows), ""]


def shown(p: float) -> str:
    """What a p-value lets a claim say: a difference only below 0.05."""
    return "a difference at the 0.05 level" if p < 0.05 else "no difference shown"


def points(a: float, b: float) -> float:
    """``a - b`` for two recalls, in percentage points: the difference of the two values as the tables
    show them (each rounded to one decimal), so a claim line matches its table's cells, and float noise
    between equal means reads 0.0, not -0.0, and compares equal."""
    return round(round(100 * a, 1) - round(100 * b, 1), 1) + 0.0


def claims(by_row: Runs, *, bridge_gain: bool = True) -> list[str]:
    """G-Rerank above each rival on held-out Recall@5 (paired p, and Holm-adjusted over the rivals: a
    difference is claimed only below 0.05 after it); its bridge Recall@5 gain over the best rival (its
    p not corrected for that choice, so it can only overstate a difference) and over EMDR2 (beside the
    paper's +10.4 when ``bridge_gain``: the paper reports it for HotpotQA only)."""
    if "gumbel" not in by_row:
        return []
    g = summarise(by_row["gumbel"], "R@5")
    gb = summarise(by_row["gumbel"], "bridge_R@5")
    rivals = [n for n in by_row if n in OBJECTIVES and n not in ("gumbel", "supervised")]
    ref = f"(paper, HotpotQA: +{PAPER_BRIDGE_GAIN:.1f} over EMDR2)" if bridge_gain else "(no paper figure)"
    out = []
    raw = {n: p for n in rivals if (p := paired_p(by_row["gumbel"], by_row[n], "R@5")) is not None}
    adjusted = holm(raw)  # five rivals tested against one row: the family's error rate is what 0.05 bounds
    for n in rivals:
        r = summarise(by_row[n], "R@5")
        if g and r:
            d = points(g[0], r[0])
            side = "above" if d > 0 else ("equal to" if d == 0 else "below")
            line = f"- G-Rerank R@5 {side} {title(n)}: {d:+.1f} points"
            if n in raw:
                family = f"{len(raw)} rival{'s' * (len(raw) != 1)}"
                line += f" (p = {raw[n]:.3f}, Holm over {family} {adjusted[n]:.3f}: {shown(adjusted[n])})"
            out.append(line)
    best = max(((n, summarise(by_row[n], "bridge_R@5")) for n in rivals), key=lambda x: x[1][0] if x[1] else -1.0, default=None)
    if gb and best and best[1]:
        p = paired_p(by_row["gumbel"], by_row[best[0]], "bridge_R@5")
        out.append(
            f"- bridge-doc R@5 gain over the best rival ({title(best[0])}): {points(gb[0], best[1][0]):+.1f} points"
            + ("" if p is None else f" (p = {p:.3f}, uncorrected for picking the best: {shown(p)})")
        )
    emdr = summarise(by_row["emdr"], "bridge_R@5") if "emdr" in by_row else None
    if gb and emdr:
        p = paired_p(by_row["gumbel"], by_row["emdr"], "bridge_R@5")
        out.append(
            f"- bridge-doc R@5 gain over EMDR2: {points(gb[0], emdr[0]):+.1f} points"
            + ("" if p is None else f" (p = {p:.3f}: {shown(p)})")
            + f" {ref}"
        )
    if g and adjusted:
        out.append(verdict(by_row, adjusted))
    return out


def verdict(by_row: Runs, adjusted: dict[str, float]) -> str:
    """The paper's headline claim (G-Rerank's R@5 above every label-free rival) decided only by the
    Holm-adjusted p-values: it holds where every rival is below at 0.05, is contradicted where one is
    above at 0.05, and is otherwise neither shown nor refuted."""
    mean = {n: s[0] for n in ("gumbel", *adjusted) if (s := summarise(by_row[n], "R@5"))}
    seeds = sorted({len(by_row[n]) for n in ("gumbel", *adjusted)})
    count = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    missing = [title(n) for n in PAPER_RIVALS if n not in by_row]
    yet = f"; without {', '.join(missing)}" if missing else ""  # a smaller group, or one part-way through
    head = f"- **Verdict** on R@5 ({count} seed{'' if count == '1' else 's'} a row{yet}): "
    above = [n for n, p in adjusted.items() if p < 0.05 and mean["gumbel"] > mean[n]]
    below = [n for n, p in adjusted.items() if p < 0.05 and mean["gumbel"] < mean[n]]
    rest = [n for n in adjusted if n not in above + below]
    if not rest and not below and missing:
        return head + (
            f"G-Rerank above {', '.join(map(title, above))} at the 0.05 level after Holm; the paper's claim "
            "(above every rival) needs the others too."
        )
    if not rest and not below:
        return head + "G-Rerank above every label-free rival at the 0.05 level after Holm: the paper's claim holds here."
    said = [
        f"G-Rerank above {', '.join(map(title, above))}" if above else "",
        f"below {', '.join(map(title, below))}" if below else "",
    ]
    text = head + (f"{' and '.join(x for x in said if x)} at the 0.05 level after Holm; " if above or below else "")
    if rest:
        closest = min(rest, key=adjusted.__getitem__)
        text += (
            f"{'no other' if above or below else 'no'} rival separated from G-Rerank (smallest Holm-adjusted p "
            f"{adjusted[closest]:.2f}, {title(closest)}); "
        )
    return (
        text
        + "the paper's claim that G-Rerank beats every rival is "
        + ("contradicted here." if below else "not shown here, and neither is the opposite.")
    )


def report(results: str | Path, *, readmes: Sequence[str | Path] = (), planned: dict[str, int] | None = None) -> Path:
    """Every group's report (table.md, table.csv, summary.json, plots) and results/summary.md against the
    paper (its Time table against ``planned``, :func:`planned_rows`); and the generated blocks of each of
    ``readmes`` (:func:`sync_readme`)."""
    results = Path(results)
    groups = {name: by_row for name, by_row in load_groups(results).items() if write_group_report(results / name) is not None}
    (results / "summary.md").write_text(summary(groups, planned))
    for readme in readmes:
        sync_readme(readme, results, planned)
    return results / "summary.md"
