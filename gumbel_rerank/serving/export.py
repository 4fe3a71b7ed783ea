"""Export a trained reranker to the formats RAG stacks load directly, with a model card.

* cross-encoder -> a ``sentence_transformers.CrossEncoder`` directory (identity activation, so
  ``predict`` returns our raw scores) that ``AutoModelForSequenceClassification`` also loads;
* bi-encoder -> a ``sentence_transformers.SentenceTransformer`` (mean pooling, normalisation):
  its cosine similarity times 1 / temperature is our score, the ranking is the same.

Weights are written as safetensors only. The sentence-transformers package does the writing, so
what we export is what it reads.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
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


def load_reranker(name_or_path: str | Path, *, kind: str | None = None) -> Reranker:
    """A training run directory, a saved reranker, an exported directory, a packaged name or a hub id.

    Ours (a run, a saved reranker, an export) know their kind, and a sentence-transformers folder with
    a pooling module is a bi-encoder; ``kind`` is for anything else (default: cross) and must agree
    where the model says its own."""
    path = Path(name_or_path)
    if path.is_dir() and ((path / "reranker").is_dir() or (path / "gumbel_rerank.json").exists()):
        reranker = Reranker.from_pretrained(str(find_reranker(path)))
    else:
        known = detect_kind(path)
        if kind is not None and known is not None and kind != known:
            raise ValueError(f"{path} is a {known}-encoder export; drop --kind {kind}")
        reranker = Reranker.from_pretrained(str(name_or_path), kind=kind or known or "cross")
    if kind is not None and reranker.kind != kind:
        raise ValueError(f"{name_or_path} holds a {reranker.kind}-encoder reranker; drop --kind {kind}")
    return reranker


def detect_kind(path: Path) -> str | None:
    """The kind an exported folder declares: our export mark, else sentence-transformers' modules."""
    try:
        if (path / EXPORT_MARK).is_file():
            kind = json.loads((path / EXPORT_MARK).read_text()).get("kind")
            return kind if kind in ("cross", "bi") else None
        if (path / "modules.json").is_file():
            modules = json.loads((path / "modules.json").read_text())
            return "bi" if any("Pooling" in str(m.get("type", "")) for m in modules if isinstance(m, dict)) else "cross"
    except (OSError, ValueError, AttributeError):
        return None
    return None


def find_reranker(run_dir: Path) -> Path:
    """``RUN_DIR/reranker`` of a training run, or a saved reranker directory itself."""
    for candidate in (run_dir / "reranker", run_dir):
        if (candidate / "gumbel_rerank.json").exists():
            return candidate
    raise FileNotFoundError(
        f"{run_dir} holds no trained reranker (expected {run_dir / 'reranker'}); pass the run directory of `gumbel-rerank train`"
    )


def _run_info(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import yaml

    cfg_file, report_file = run_dir / "config.yaml", run_dir / "report.json"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return (cfg if isinstance(cfg, dict) else {}), (report if isinstance(report, dict) else {})


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


EXPORT_MARK = "gumbel_rerank_export.json"  # written into every export: what --overwrite may replace
RUN_FILES = ("config.yaml", "metrics.jsonl", "report.json", "latest", "gumbel_rerank.json")


def check_target(run_dir: Path, out: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that would lose somebody's files: never a run, never a non-empty
    folder that is not a previous export, and an export only with ``overwrite``."""
    if out.resolve() == run_dir.resolve() or run_dir.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"export target {out} holds the run {run_dir}; pick another folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"export target {out} exists and is not a folder; pick another path")
    entries = list(out.iterdir())
    if not entries:
        return
    if any((out / f).exists() for f in RUN_FILES) or any(out.glob("checkpoint-*")):
        raise ValueError(f"export target {out} holds a training run or a saved reranker; it is never replaced")
    if not (out / EXPORT_MARK).exists():
        raise ValueError(f"export target {out} is not empty and is not an earlier export; pick an empty or new folder")
    if not overwrite:
        raise ValueError(f"export target {out} holds an earlier export; pass --overwrite to replace it")


def export(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a sentence-transformers directory with a model card to ``out_dir`` (atomically).

    ``out_dir`` must be new, empty, or (with ``overwrite``) an earlier export; a folder holding a
    run or anything else is refused before any work.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    check_target(run_dir, out, overwrite=overwrite)
    try:
        import torch
        from sentence_transformers import CrossEncoder, SentenceTransformer

        try:  # sentence-transformers >= 6
            from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
        except ImportError:
            from sentence_transformers.models import Normalize, Pooling, Transformer  # type: ignore[no-redef]
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError("export needs sentence-transformers: pip install 'gumbel-rerank[st]'") from err
    source = find_reranker(run_dir)
    reranker = Reranker.from_pretrained(str(source))
    cfg, report = _run_info(run_dir if source != run_dir else run_dir.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / "model"
        if reranker.kind == "cross":
            model: Any = CrossEncoder(
                str(source), num_labels=1, max_length=reranker.max_length, activation_fn=torch.nn.Identity()
            )
        else:
            body = Transformer(str(source), max_seq_length=reranker.max_length)
            dim = getattr(body, "get_embedding_dimension", None) or body.get_word_embedding_dimension
            model = SentenceTransformer(modules=[body, Pooling(dim(), "mean"), Normalize()])
        model.save_pretrained(str(staged), safe_serialization=True)
        (staged / "README.md").write_text(model_card(reranker, cfg, report, path=str(out)))
        (staged / EXPORT_MARK).write_text(json.dumps({"source": str(source), "kind": reranker.kind}))
        if out.exists():  # empty, or an earlier export (check_target): moved aside, then removed
            old = Path(tmp) / "previous"
            out.rename(old)
        staged.rename(out)
    return out
