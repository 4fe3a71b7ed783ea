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
import tempfile
from pathlib import Path
from typing import Any

from ..onnx_reranker import ONNX_DIR, OnnxReranker
from ..rerankers import Reranker
from .card import model_card


def load_reranker(name_or_path: str | Path, *, kind: str | None = None, backend: str = "torch") -> Any:
    """A training run directory, a saved reranker, an exported directory, a packaged name or a hub id.

    Ours (a run, a saved reranker, an export) know their kind, and a sentence-transformers folder with
    a pooling module is a bi-encoder; ``kind`` is for anything else (default: cross) and must agree
    where the model says its own. ``backend`` ``onnx`` / ``onnx-int8`` scores an export's ``onnx/``
    graphs with onnxruntime (:class:`~gumbel_rerank.onnx_reranker.OnnxReranker`)."""
    path = Path(name_or_path)
    if backend != "torch":
        if backend not in ("onnx", "onnx-int8"):
            raise ValueError(f"backend must be torch, onnx or onnx-int8, got {backend!r}")
        onnx = OnnxReranker.from_pretrained(path, variant="int8" if backend == "onnx-int8" else "fp32")
        if kind is not None and onnx.kind != kind:
            raise ValueError(f"{name_or_path} holds a {onnx.kind}-encoder export; drop --kind {kind}")
        return onnx
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


def export_onnx(reranker: Reranker, folder: Path) -> list[Path]:
    """``folder/model.onnx`` (float32) and ``folder/model_qint8.onnx`` (int8 weights, dynamic quantisation),
    with the tokenizer and the reranker's settings beside them: what :class:`OnnxReranker` loads. A
    cross-encoder's graph returns ``logits`` (B, 1), a bi-encoder's ``last_hidden_state``."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..onnx_reranker import FILES, META

    class Graph(torch.nn.Module):
        def __init__(self, encoder: Any, cross: bool) -> None:
            super().__init__()
            self.encoder, self.cross = encoder, cross

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            types = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **types)
            return out.logits if self.cross else out.last_hidden_state

    folder.mkdir(parents=True, exist_ok=True)
    was_training = reranker.training
    reranker.eval()
    sample = reranker.encode_pairs(["a question", "another"], ["a document", "a longer document here"], padding=True)
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]  # BERT has token types
    args = tuple(torch.tensor(sample[k]) for k in names)
    dims = ({0: "batch", 1: "tokens"},) * len(names)
    with torch.no_grad():
        program = torch.onnx.export(
            Graph(reranker.encoder, reranker.kind == "cross").eval(),
            args,
            input_names=names,
            output_names=["logits" if reranker.kind == "cross" else "last_hidden_state"],
            dynamic_shapes=dims,
            dynamo=True,
            verbose=False,
        )
    reranker.train(was_training)
    assert program is not None
    program.save(str(folder / FILES["fp32"]), external_data=False)
    quantize_dynamic(str(folder / FILES["fp32"]), str(folder / FILES["int8"]), weight_type=QuantType.QInt8)
    reranker.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    meta = {
        "kind": reranker.kind,
        "max_length": reranker.max_length,
        "temperature": reranker.temperature,
        "pad_id": reranker.tokenizer.pad_token_id or 0,
    }
    (folder / META).write_text(json.dumps(meta, indent=2))
    return [folder / FILES["fp32"], folder / FILES["int8"]]


def export(run_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False, onnx: bool = False) -> Path:
    """Write a sentence-transformers directory with a model card to ``out_dir`` (atomically).

    ``out_dir`` must be new, empty, or (with ``overwrite``) an earlier export; a folder holding a
    run or anything else is refused before any work. ``onnx`` adds ``onnx/`` (:func:`export_onnx`).
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
        if onnx:
            export_onnx(reranker, staged / ONNX_DIR)
        (staged / "README.md").write_text(model_card(reranker, cfg, report, path=str(out)))
        (staged / EXPORT_MARK).write_text(json.dumps({"source": str(source), "kind": reranker.kind}))
        if out.exists():  # empty, or an earlier export (check_target): moved aside, then removed
            old = Path(tmp) / "previous"
            out.rename(old)
        staged.rename(out)
    return out
