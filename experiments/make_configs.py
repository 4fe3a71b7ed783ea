"""Write experiments/configs/<group>/<row>.yaml: one complete, standalone training config per table row.

The configs are committed; this script is how they were made. Edit a group here and rerun
(`python experiments/make_configs.py`) rather than editing dozens of YAML files by hand.

Sizing (the reproduction at scale, plan.yaml): HotpotQA distractor, a fixed split of the 489
questions with 10 paragraphs in a fixed shuffled order (``data.shuffle``, ``data.seed`` 0; the file's
own order is by question type): the first 330 are training-side (300 trained on, the last 30 held back
for label-free checkpoint selection), questions 330-488 (159) are held out (``data.eval_start``, so the
learning-curve groups, which train on fewer, are scored on the very same questions). Every row
trains 150 steps of 2 questions (one pass over 300) with the stabilised defaults (LR 1e-5, warmup,
linear decay, top 2 encoder layers), evaluates every 25 steps (the held-out curve) and keeps the
checkpoint with the lowest validation answer NLL (no labels). Every objective of a group gets the
same steps, batches, schedule, reader and candidates. Docs are encoded in fp32 and their keys and
values kept in fp16 (``reader.doc_cache_dtype``; bench/precision.py and tests/test_readers.py measure
what that costs the answer NLL) so that one cache holds a whole training split across epochs, rows
and seeds; teachers are cached on disk once per group.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
RIVALS = ["gumbel", "adist", "emdr", "pdist", "loop", "lsr", "supervised"]
HOTPOT = "../shared/data/hotpotqa/hotpot_dev_distractor_500_ircot.jsonl"

BASE: dict[str, Any] = {
    # shuffle: the split is of a fixed permutation (data.seed 0) of the file, whose order is not random
    # (the IRCoT HotpotQA file has no yes/no question among its first 200 and 27-32% in its last 300)
    "data": {
        "source": HOTPOT,
        "shuffle": True,
        "num_train": 330,
        "num_val": 30,
        "num_eval": 159,
        "eval_start": 330,
        "min_docs": 10,
    },
    "reranker": {"model": "all-minilm-l6-v2", "kind": "bi", "max_length": 256, "temperature": 0.05},
    "reader": {
        "model": "smollm2-135m-instruct",
        "layout": "parallel",
        "max_doc_tokens": 160,
        # docs encoded in fp32 (the committed results were; the library's default is now bf16 on a bf16 CPU)
        "doc_dtype": "",
        "doc_cache_dtype": "float16",
        "doc_cache_mb": 12000,
    },
    # rivals: the bi-encoder score is cosine / 0.05, so temperature_score 0.2 is Atlas's cosine / 0.01
    "objective": {
        "name": "gumbel",
        "k": 5,
        "tau": 0.5,
        "kappa": 1.0,
        "samples": 1,
        "temperature_score": 0.2,
        "temperature_gold": 0.01,
        "log_hard_loss": True,
    },
    "train": {
        "steps": 150,
        "batch_size": 2,
        "lr": 1.0e-5,
        "warmup_steps": 10,
        "schedule": "linear",
        "train_layers": 2,
        "eval_every": 25,
        "select": "val_loss",
        "checkpoint_every": 0,
    },
    "eval": {"ks": [2, 5], "generate": False},
}
ADAPTER = "runs/experiments/adapters/hotpotqa/adapter"  # made by experiments/run.py (ensure_adapters)
CURVE_SIZES = (32, 100)  # the learning curve's smaller training sets (300 is the main group)
# G-Rerank and the two strongest rivals of the 32-question table (PDist, LOOP; chosen before these runs), and
# ADist, which the 300-question table then put second (LOOP 86.9, ADist 86.7, PDist 86.3 held-out R@5)
CURVE_ROWS = ("gumbel", "adist", "pdist", "loop")
# The second setting, with room to learn (issue 45): a cross-encoder from MiniLM with a fresh 1-logit head
# (its start is near chance), every layer trained. The positive control first, then G-Rerank and the new
# estimator, then the rivals, so that a plan cut short has the rows that decide. LR 1e-4: the LR the
# validation answer NLL preferred for G-Rerank, PDist and supervised in the bi-encoder grid
# (results/lr_choice.md); not chosen on this setting (no grid here yet). P_R = softmax(logit / 1).
CROSS_ROWS = ("supervised", "gumbel", "reinforce", "pdist", "lsr", "emdr", "adist", "loop")
# the adapted-reader LR grid (issue 45): the set-level estimators and the positive control first
GRID_ROWS = ("reinforce", "gumbel", "supervised")
GRID_LRS = ("1e-4", "3e-5", "1e-5")
CROSS_RERANKER: dict[str, Any] = {"kind": "cross", "max_length": 256}
CROSS_TRAIN: dict[str, Any] = {"lr": 1e-4, "train_layers": 0}
CROSS_GRID_LRS = ("3e-5", "1e-5")  # with 1e-4 (hotpotqa-cross-fresh), the grid issue 45 asks for


def cross(objective: str, lr: float = CROSS_TRAIN["lr"]) -> dict[str, Any]:
    """A row of the cross-encoder setting: MiniLM with a fresh 1-logit head, every layer trained, P_R =
    softmax(logit / 1); Subset REINFORCE with 4 subsets."""
    return merged(
        reranker=CROSS_RERANKER,
        train={**CROSS_TRAIN, "lr": lr},
        objective={"name": objective, "temperature_score": 1.0, "samples": 4 if objective == "reinforce" else 1},
    )


def merged(**sections: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE)
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


def groups() -> dict[str, dict[str, dict[str, Any]]]:
    musique = {
        "source": "../shared/data/musique/musique_ans_train_100.json",
        "eval_source": "../shared/data/musique/musique_ans_dev_200.jsonl",
        "num_train": 100,
        "num_val": 10,
        "num_eval": 200,
        "eval_start": 0,
        "min_docs": 20,
    }
    wiki = {"source": "../shared/data/2wikimultihopqa/2wiki_dev_500.pandas.json", "num_eval": 170}
    out: dict[str, dict[str, dict[str, Any]]] = {"hotpotqa": {o: merged(objective={"name": o}) for o in RIVALS}}
    for n in CURVE_SIZES:  # same held-out questions and steps, fewer training questions (same 30 for validation size)
        out[f"hotpotqa-train{n}"] = {o: merged(data={"num_train": n + 30}, objective={"name": o}) for o in CURVE_ROWS}
    # the reader adapted to HotpotQA first (LoRA on the answer NLL with all candidates of the same 300 training
    # questions, no doc labels; experiments/run.py makes it when it is missing), then every objective as above
    adapted = {"adapter": ADAPTER}
    out["hotpotqa-adapted"] = {o: merged(reader=adapted, objective={"name": o}) for o in RIVALS}
    # the same comparison at 10x the learning rate: at 1e-5 G-Rerank, EMDR2 and LSR barely leave the start
    # (results/diagnostics/gumbel-lr1e-4); each objective's better LR is then chosen by its validation NLL
    out["hotpotqa-lr1e-4"] = {o: merged(train={"lr": 1e-4}, objective={"name": o}) for o in RIVALS}
    out["2wiki"] = {o: merged(data=wiki, objective={"name": o}) for o in RIVALS}
    out["hotpotqa-cross-fresh"] = {o: cross(o) for o in CROSS_ROWS}
    # its LR grid (issue 45): every row at the grid's other LRs, the same config but train.lr; the rows at
    # 1e-4 are hotpotqa-cross-fresh's seed 0 (results/hotpotqa-cross-grid/grid_base.json), not run twice
    out["hotpotqa-cross-grid"] = {f"{o}-lr{lr}": cross(o, float(lr)) for lr in CROSS_GRID_LRS for o in CROSS_ROWS}
    # the LR grid of issue 45 with the audit's stronger teacher (the reader adapted to HotpotQA): every
    # objective x {1e-5, 3e-5, 1e-4}, each objective's LR then chosen by its own validation answer NLL
    # (label-free). Subset REINFORCE with 4 subsets (its leave-one-out baseline needs >= 2). One process
    # runs the group, so only its first row encodes the training docs; the rest read the doc cache.
    out["hotpotqa-adapted-grid"] = {
        f"{o}-lr{lr}": merged(
            reader=adapted, train={"lr": float(lr)}, objective={"name": o, "samples": 4 if o == "reinforce" else 1}
        )
        for o in GRID_ROWS
        for lr in GRID_LRS
    }
    # issue 45's HotpotQA group at the chosen defaults: the shipped bi-encoder recipe of the groups above (MiniLM,
    # top 2 layers, the plain SmolLM2 reader), every objective x {1e-4, 3e-5, 1e-5}, each objective's LR chosen
    # by its own validation answer NLL (label-free), then 3 seeds at it. All fresh, at today's code: hotpotqa
    # (1e-5) and hotpotqa-lr1e-4 ran at older code (fp32 reranker, no Subset REINFORCE), so no grid_base.
    # Plain reader, not the adapted one: a row costs about a third of an adapted-grid row (27 min).
    out["hotpotqa-grid"] = {
        f"{o}-lr{lr}": merged(train={"lr": float(lr)}, objective={"name": o, "samples": 4 if o == "reinforce" else 1})
        for o in CROSS_ROWS
        for lr in GRID_LRS
    }
    out["musique"] = {
        o: merged(data=musique, reader={"max_doc_tokens": 128}, objective={"name": o}, train={"steps": 90, "eval_every": 15})
        for o in RIVALS
    }
    return out


def main() -> None:
    for group, rows in groups().items():
        folder = HERE / "configs" / group
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.yaml"):
            old.unlink()
        for row, cfg in rows.items():
            text = f"# experiments/{group}: row {row!r}. Generated by experiments/make_configs.py.\n"
            (folder / f"{row}.yaml").write_text(text + yaml.safe_dump(cfg, sort_keys=False))


if __name__ == "__main__":
    main()
