"""Where the default G-Rerank step's time goes once the docs are cached (issue 44's cached target).

    python bench/step_parts.py --out bench/results/step_parts.json   # about 2 minutes on 2 cores

``bench/train_step.py``'s ``gumbel-defaultcached`` is the whole step (the loop's defaults on this
machine, the docs' encodings already in the reader's doc cache); this splits it, in one process,
over the same 6 HotpotQA questions (10 paragraphs each) repeated ``--rounds`` times:

- ``reranker_forward``: the MiniLM cross-encoder scoring the 10 pairs (dropout on, precision auto);
- ``objective_forward``: the relaxed top-k draw and the reader's answer pass with a gradient,
  without the hard-top-k loss log (``objective.log_hard_loss: false``);
- ``hard_loss_log``: what ``objective.log_hard_loss: true`` (the default) adds, a second answer pass
  without a gradient under the hard top-k mask, measured as the forward with it minus without;
- ``backward``: the loss's backward through the reader's answer pass and the reranker.

The floor (``supervised-dropout`` in ``train_step.py``) is the reranker's forward and backward.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import DOC_CACHE_MB, ROOT, default_reader, hotpot_questions, median


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/step_parts.json")
    args = p.parse_args()

    import torch

    from gumbel_rerank.config import ObjectiveConfig
    from gumbel_rerank.models import load_causal_lm
    from gumbel_rerank.objectives import OBJECTIVES, Batch, TeacherCache
    from gumbel_rerank.rerankers import Reranker

    torch.manual_seed(0)
    questions = hotpot_questions(6, 10)
    reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind="cross", max_length=256)
    model, tokenizer = load_causal_lm("smollm2-135m-instruct", dtype=torch.float32)
    reader = default_reader(model, tokenizer, DOC_CACHE_MB)
    reranker.precision = "auto"
    reranker.train(True)  # dropout on, as the loop trains by default
    generator = torch.Generator().manual_seed(0)
    with_log, without = (
        OBJECTIVES["gumbel"](ObjectiveConfig(name="gumbel", k=5, log_hard_loss=flag), TeacherCache()) for flag in (True, False)
    )
    for ex in questions:  # fill the doc cache, outside the timing
        without(Batch([ex]), reranker([ex]).detach(), reader, generator)

    parts: dict[str, list[float]] = {"reranker_forward": [], "objective_forward": [], "forward_with_log": [], "backward": []}
    for r in range(args.rounds + 1):  # round 0 warms up
        for ex in questions:
            t = time.perf_counter()
            scores = reranker([ex])
            t_scores = time.perf_counter() - t
            batch = Batch([ex])
            batch.context(reader)  # cached: a lookup
            t = time.perf_counter()
            with_log(batch, scores, reader, generator)
            t_log = time.perf_counter() - t
            t = time.perf_counter()
            out = without(batch, scores, reader, generator)
            t_plain = time.perf_counter() - t
            t = time.perf_counter()
            out.loss.backward()
            t_back = time.perf_counter() - t
            reranker.zero_grad(set_to_none=True)
            if r:
                for key, value in zip(parts, (t_scores, t_plain, t_log, t_back), strict=True):
                    parts[key].append(value)
    result = {key: median(values) for key, values in parts.items()}
    result["hard_loss_log"] = result["forward_with_log"] - result["objective_forward"]
    result["step_without_log"] = result["reranker_forward"] + result["objective_forward"] + result["backward"]
    result["step_with_log"] = result["step_without_log"] + result["hard_loss_log"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("median seconds per part of the default cached G-Rerank step (one question, 10 docs):")
    for key in ("reranker_forward", "objective_forward", "hard_loss_log", "backward", "step_without_log", "step_with_log"):
        print(f"  {key:18s} {result[key]:.3f}")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
