"""The model card an export carries: huggingface_hub's card data (with a model-index of the held-out
metrics) and a README that says how the reranker was trained and how to load it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..evaluation.tables import markdown_table
from ..models import ALIASES
from ..rerankers import Reranker

CITATION = """@inproceedings{huang2025gumbel,
  title     = {Gumbel Reranking: Differentiable End-to-End Reranker Optimization},
  author    = {Huang, Siyuan and others},
  booktitle = {Proceedings of the 63rd Annual Meeting of the Association for Computational Linguistics (ACL)},
  year      = {2025},
  note      = {arXiv:2502.11116}
}"""


def _hub_id(name: str) -> str:
    return {v: k for k, v in ALIASES.items()}.get(name, name)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells repository ids


def hub_id_or_none(name: str) -> str | None:
    """``name`` as a Hub id when it is one (a packaged alias maps to its upstream id), else None: a local
    path, ``synthetic`` or ``unknown`` is no Hub id and is described in the card's body instead."""
    name = _hub_id(name)
    return name if HUB_ID.match(name) and not Path(name).exists() else None


def card_data(reranker: Reranker, cfg: dict[str, Any], report: dict[str, Any]) -> Any:
    """The card's YAML header as huggingface_hub's ``ModelCardData``, with a ``model-index`` of the
    held-out metrics."""
    from huggingface_hub import EvalResult, ModelCardData

    rr, data, ob = (cfg.get(k, {}) for k in ("reranker", "data", "objective"))
    cross = reranker.kind == "cross"
    source = str(data.get("source", "unknown"))
    dataset = hub_id_or_none(source)
    after = report.get("after", {})
    results = [
        EvalResult(
            task_type="text-ranking",
            task_name="Reranking",
            dataset_type=dataset or "custom",
            dataset_name=dataset or Path(source).stem or "custom",
            dataset_split="held-out",
            metric_type=m.lower(),
            metric_name=f"held-out {m}",
            metric_value=round(float(v), 4),
        )
        for m, v in after.items()
        if isinstance(v, int | float) and math.isfinite(v)
    ]
    return ModelCardData(
        library_name="sentence-transformers",
        pipeline_tag="text-ranking" if cross else "sentence-similarity",
        base_model=hub_id_or_none(str(rr.get("model", ""))),
        datasets=[dataset] if dataset else None,
        tags=["gumbel-rerank", "reranker", "cross-encoder" if cross else "bi-encoder", "rag", str(ob.get("name", "gumbel"))],
        license="apache-2.0",
        model_name=f"gumbel-rerank {ob.get('name', 'gumbel')} reranker",
        eval_results=results or None,
    )


def model_card(reranker: Reranker, cfg: dict[str, Any], report: dict[str, Any], path: str = "PATH") -> str:
    rr, rd, ob, data, tr = (cfg.get(k, {}) for k in ("reranker", "reader", "objective", "data", "train"))
    base = _hub_id(str(rr.get("model", "unknown")))
    dataset = str(data.get("source", "unknown"))
    cross = reranker.kind == "cross"
    before, after = report.get("before", {}), report.get("after", {})
    names = [m for m in after if isinstance(after.get(m), int | float) and isinstance(before.get(m), int | float)]
    rows = [[m, f"{before[m]:.3f}", f"{after[m]:.3f}"] for m in names]
    table = markdown_table(["metric", "zero-shot", "trained"], rows) if rows else "No held-out report was found."
    header = card_data(reranker, cfg, report).to_yaml()
    if cross:
        usage = (
            f"```python\nfrom sentence_transformers import CrossEncoder\n\nmodel = CrossEncoder({path!r})\n"
            'model.rank("who wrote Hamlet?", ["Hamlet is a play by Shakespeare.", "Paris is in France."])\n```'
        )
    else:
        usage = (
            f"```python\nfrom sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer({path!r})\n"
            'q, d = model.encode(["who wrote Hamlet?", "Hamlet is a play by Shakespeare."])\n'
            "score = model.similarity(q, d)  # cosine; training used cosine / "
            f"{reranker.temperature}\n```"
        )
    return f"""---
{header.strip()}
---

# {base} reranker trained with gumbel-rerank ({ob.get("name", "gumbel")})

A {"cross" if cross else "bi"}-encoder reranker fine-tuned from `{base}` without relevance labels: it
learned from the answer loss of a frozen reader LM through the objective below (for G-Rerank, a
Gumbel relaxed top-k mask inside the reader's attention; Huang et al., ACL 2025).

## Training
- Reader (frozen): `{_hub_id(str(rd.get("model", "unknown")))}`, layout `{rd.get("layout", "?")}`
- Objective: `{ob.get("name", "?")}`, k={ob.get("k", "?")}, tau={ob.get("tau", "?")}, kappa={ob.get("kappa", "?")},
  Gumbel samples={ob.get("samples", "?")}, relaxation={ob.get("relaxation", "?")},
  calibration={ob.get("calibration", "none")}, straight-through={ob.get("straight_through", "?")}
- Data: `{dataset}`, {data.get("num_train", "?")} training questions (their gold labels unused),
  {data.get("num_eval", "?")} held out
- Steps: {tr.get("steps", "?")} x batch {tr.get("batch_size", "?")}, learning rate {tr.get("lr", "?")}, seed {tr.get("seed", "?")}
- Max length {reranker.max_length} tokens

## Held-out results (before and after training, top-k={ob.get("k", "?")})
{table}

R@k: share of gold docs in the top k; bridge_R@k: gold docs that do not contain the answer;
EM/F1: the reader's answer from the top-k docs.

## Usage
{usage}
{"Scores are raw logits (identity activation), as during training." if cross else ""}

## Citation
```bibtex
{CITATION}
```
"""
