"""The readers audited side by side (issue "Can this reader teach this reranker?").

    python experiments/audit.py            # every job below not yet in experiments/results/audit/, then the table
    python experiments/audit.py --report   # only the table (experiments/results/audit/audit.md)

Each job is ``gumbel-rerank audit CONFIG reader.model=... --split held-out``: the frozen reader against
the zero-shot MiniLM bi-encoder on the group's held-out questions (the audit reads their labels; no
training choice is made from them). A finished job's JSON is kept, so the script resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
OUT = HERE / "results" / "audit"
ADAPTER = "runs/experiments/adapters/hotpotqa/adapter"  # the hotpotqa-adapted group's (experiments/run.py makes it)
READERS = {
    "smollm2": ["reader.model=smollm2-135m-instruct"],
    "smollm2-lora": ["reader.model=smollm2-135m-instruct", f"reader.adapter={ADAPTER}"],
    "gemma3-270m": ["reader.model=gemma-3-270m"],
    "qwen2.5-0.5b": ["reader.model=qwen2.5-coder-0.5b-instruct"],
}
GROUPS = {"hotpotqa": "hotpotqa", "2wiki": "2wiki", "musique": "musique"}
# (group, reader) -> held-out questions audited: all 159 for the default reader, the first 30 for the other
# HotpotQA readers, 20 of 2Wiki and 15 of MuSiQue (20 docs a question): a question's 19-33 views take 5-25 s
# of reader time on 2 cores, and one sitting had about an hour for the whole table.
JOBS = {
    ("hotpotqa", "smollm2"): 159,
    ("hotpotqa", "gemma3-270m"): 30,
    ("hotpotqa", "qwen2.5-0.5b"): 30,
    ("2wiki", "smollm2"): 20,
    ("2wiki", "qwen2.5-0.5b"): 20,
    ("musique", "smollm2"): 15,
    ("musique", "qwen2.5-0.5b"): 15,
    ("hotpotqa", "smollm2-lora"): 40,
}
SUBSETS = 4  # random 5-subsets per question


def command(group: str, reader: str) -> list[str]:
    config = f"experiments/configs/{GROUPS[group]}/gumbel.yaml"
    out = OUT / f"{group}-{reader}.json"
    n = str(JOBS[group, reader])
    return [
        "gumbel-rerank",
        "audit",
        config,
        *READERS[reader],
        "--split",
        "held-out",
        "--questions",
        n,
        "--subsets",
        str(SUBSETS),
        "--out",
        str(out.relative_to(HERE.parent)),
        "-q",
    ]


def run(group: str, reader: str) -> None:
    out = OUT / f"{group}-{reader}.json"
    if out.exists():
        return
    if reader == "smollm2-lora" and not Path(ADAPTER, "adapter_config.json").exists():
        print(f"skip {group}-{reader}: no adapter at {ADAPTER} (experiments/run.py makes it)", flush=True)
        return
    argv = command(group, reader)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gumbel_rerank.cli", *argv[1:]], capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode != 0:
        raise SystemExit(f"{group}-{reader} failed:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["command"] = " ".join(argv)
    result["wall_seconds"] = time.perf_counter() - t0  # loading included; the table's s/question is the audit alone
    out.write_text(json.dumps(result, indent=1))
    print(f"{group}-{reader}: {result['summary']['verdict']}", flush=True)


COLUMNS = [
    ("nll_no_doc", "NLL no doc", ".2f"),
    ("nll_start_topk", "NLL start top 5", ".2f"),
    ("nll_random_k", "NLL random 5", ".2f"),
    ("nll_all_docs", "NLL all docs", ".2f"),
    ("nll_gold_only", "NLL gold only", ".2f"),
    ("nll_sd_across_k_subsets", "sd across 5-subsets", ".3f"),
    ("start_R@k", "start R@5", ".3f"),
    ("teacher_R@k", "per-doc teacher R@5", ".3f"),
    ("start_auc", "start AUC", ".3f"),
    ("teacher_auc", "teacher AUC", ".3f"),
    ("swaps", "swaps", "d"),
    ("swap_share_lowering_nll", "swap lowers NLL", ".1%"),
    ("swap_mean_change", "mean swap change", "+.2f"),
    ("seconds_per_question", "reader s/question", ".1f"),
]


def rows() -> list[tuple[str, str, dict[str, Any]]]:
    """(group, reader, summary) of every finished job, and the default reader re-summarised over the
    first n questions wherever another reader of the group read only those n (the same questions)."""
    from gumbel_rerank.evaluation.audit import summarise

    out = []
    done = {
        job: json.loads((OUT / f"{job[0]}-{job[1]}.json").read_text())
        for job in JOBS
        if (OUT / f"{job[0]}-{job[1]}.json").exists()
    }
    for (group, reader), result in done.items():
        out.append((group, reader, result["summary"]))
        if reader != "smollm2" or len(result["questions"]) < 2:
            continue
        for n in sorted({r["summary"]["questions"] for (g, _), r in done.items() if g == group} - {len(result["questions"])}):
            if n < len(result["questions"]):
                seconds = result["summary"]["seconds_per_question"] * n
                out.append((group, f"smollm2, first {n}", summarise(result["questions"][:n], result["summary"]["k"], seconds)))
    return out


def table() -> str:
    head = ["data", "reader", "questions", *(c[1] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for group, reader, s in rows():
        cells = [format(s[key], spec) if key in s else "" for key, _, spec in COLUMNS]
        lines.append("| " + " | ".join([group, reader, str(s["questions"]), *cells]) + " |")
    from gumbel_rerank.evaluation.audit import verdict

    verdicts = [f"- {g} / {r}: {verdict(s)}" for g, r, s in rows()]  # the verdict rule as the code has it now
    commands = [f"- `{' '.join(command(g, r))}`" for g, r in JOBS if (OUT / f"{g}-{r}.json").exists()]
    return "\n".join(
        [
            "# Can these readers teach this reranker?",
            "",
            "Generated by `python experiments/audit.py --report` from the JSON files beside it. NLL: the",
            "reader's answer NLL in nats per token; the start: zero-shot MiniLM (bi-encoder); k = 5; the",
            "group's first held-out questions (the count is in the table); 4 random 5-subsets per question.",
            "s/question is the audit's reader time on 2 CPU cores (all views of a question, docs encoded once).",
            "",
            *lines,
            "",
            "Verdicts:",
            "",
            *verdicts,
            "",
            "Commands:",
            "",
            *commands,
            "",
        ]
    )


BLOCK = ("<!-- audit: table (generated by `python experiments/audit.py --report`; do not edit) -->", "<!-- /audit -->")


def readme_block() -> str:
    """The table and verdicts as experiments/README.md shows them (the page's own heading omitted)."""
    return "\n".join(table().splitlines()[2:]).strip()


def write_readme(page: Path = HERE / "README.md") -> None:
    """Rewrite the generated audit block of ``page`` (the text around it is kept)."""
    text = page.read_text()
    start, end = text.index(BLOCK[0]) + len(BLOCK[0]), text.index(BLOCK[1])
    page.write_text(text[:start] + "\n" + readme_block() + "\n" + text[end:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", action="store_true", help="only rewrite the table from the results")
    p.add_argument("--only", help="run only this group-reader job, e.g. hotpotqa-smollm2")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for group, reader in JOBS:
            if args.only in (None, f"{group}-{reader}"):
                run(group, reader)
    (OUT / "audit.md").write_text(table())
    if BLOCK[0] in (HERE / "README.md").read_text():
        write_readme()
    print(table())


if __name__ == "__main__":
    main()
