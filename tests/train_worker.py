"""A training process for the multi-process and kill-and-resume tests (run by them, not by pytest).

    python tests/train_worker.py OUT_DIR BERT_DIR [--kill-at-step N] [--resume] [key=value ...]

Trains with the tiny Llama reader of conftest; ``--kill-at-step N`` sends SIGKILL to this very
process when the objective is called for step N (a real, uncatchable kill mid-training).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import byte_tokenizer, tiny_llama

from gumbel_rerank import objectives
from gumbel_rerank.config import load
from gumbel_rerank.readers import make_reader
from gumbel_rerank.training.loop import train

COMMON = [
    "data.num_train=16",
    "data.num_eval=4",
    "data.num_docs=5",
    "objective.k=2",
    "train.batch_size=4",
    "train.lr=1e-3",
    "train.checkpoint_every=2",
    "eval.generate=false",
    "reranker.max_length=96",
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("bert_dir")
    p.add_argument("--kill-at-step", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load(None, [*COMMON, f"train.out_dir={args.out_dir}", f"reranker.model={args.bert_dir}", *args.overrides])
    if args.kill_at_step:
        inner = objectives.OBJECTIVES[cfg.objective.name]

        class KillAt(inner):  # type: ignore[valid-type,misc]
            calls = 0

            def __call__(self, *a: object) -> object:
                KillAt.calls += 1
                if KillAt.calls == args.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return super().__call__(*a)

        objectives.OBJECTIVES[cfg.objective.name] = KillAt
    reader = make_reader("parallel", tiny_llama(), byte_tokenizer("decoder"))
    train(cfg, progress=False, reader=reader, resume=args.resume)


if __name__ == "__main__":
    main()
