"""A reranker that scores with onnxruntime from an ONNX export: no torch at serving time.

``gumbel-rerank export RUN OUT --onnx`` writes ``OUT/onnx/model.onnx`` (float32) and
``OUT/onnx/model_qint8.onnx`` (dynamically quantised int8 weights) beside the sentence-transformers
folder. A cross-encoder's graph returns ``logits`` (B, 1), the raw score; a bi-encoder's returns
``last_hidden_state`` (B, L, H), pooled here as in training (masked mean, L2 norm), and a pair's score
is the cosine over the temperature. Texts are tokenised by the ``tokenizers`` library from the export's
``tokenizer.json``, with the truncation training used (the doc is cut first; only a query that alone
fills ``max_length`` is cut too). This module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.schema import Ranks

ONNX_DIR = "onnx"
FILES = {"fp32": "model.onnx", "int8": "model_qint8.onnx"}
META = "gumbel_rerank.json"  # kind, max_length, temperature: the reranker's own settings


class OnnxReranker(Ranks):
    """``predict`` / ``rank`` as :class:`~gumbel_rerank.rerankers.Reranker` has them, over onnxruntime."""

    def __init__(self, session: Any, tokenizer: Any, meta: dict[str, Any], variant: str) -> None:
        self.session, self.tokenizer, self.variant = session, tokenizer, variant
        self.kind, self.max_length, self.temperature = meta["kind"], int(meta["max_length"]), float(meta["temperature"])
        self.pad_id = int(meta.get("pad_id", 0))
        self.inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def from_pretrained(cls, path: str | Path, *, variant: str = "fp32", threads: int = 0) -> OnnxReranker:
        """An export folder (``OUT`` of ``export --onnx``) or its ``onnx/`` folder; ``variant`` is
        ``fp32`` or ``int8``; ``threads`` 0 lets onnxruntime choose."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if variant not in FILES:
            raise ValueError(f"an ONNX variant is one of {', '.join(FILES)}, got {variant!r}")
        root = Path(path)
        folder = root / ONNX_DIR if (root / ONNX_DIR).is_dir() else root
        model = folder / FILES[variant]
        if not model.is_file():
            raise FileNotFoundError(f"{model} not found; make it with: gumbel-rerank export RUN OUT --onnx")
        meta = json.loads((folder / META).read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        return cls(session, tokenizer, meta, variant)

    def _encode(self, items: list[Any]) -> list[Any]:
        """Token encodings: pairs truncate the doc only (both, longest first, when a query alone is too long)."""
        try:
            self.tokenizer.enable_truncation(self.max_length, strategy="only_second")
            return list(self.tokenizer.encode_batch(items))
        except Exception as err:  # tokenizers: "Truncation error: Sequence to truncate too short"
            if "runcat" not in str(err):
                raise
            self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
            return list(self.tokenizer.encode_batch(items))

    def _run(self, encodings: list[Any]) -> np.ndarray:
        L = max(len(e.ids) for e in encodings)
        feed = {
            "input_ids": np.full((len(encodings), L), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(encodings), L), dtype=np.int64),
            "token_type_ids": np.zeros((len(encodings), L), dtype=np.int64),
        }
        for i, e in enumerate(encodings):
            n = len(e.ids)
            feed["input_ids"][i, :n], feed["attention_mask"][i, :n], feed["token_type_ids"][i, :n] = e.ids, 1, e.type_ids
        out = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]
        if self.kind == "cross":
            return np.asarray(out[:, 0], dtype=np.float64)
        mask = feed["attention_mask"][..., None].astype(out.dtype)
        pooled = (out * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
        return np.asarray(pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12), dtype=np.float64)

    def _batched(self, items: list[Any], batch_size: int) -> np.ndarray:
        """Rows for ``items`` in input order, run in batches of similar token length."""
        encodings = self._encode(items)
        order = sorted(range(len(items)), key=lambda i: -len(encodings[i].ids))
        rows: list[Any] = [None] * len(items)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            for j, row in zip(chunk, self._run([encodings[j] for j in chunk]), strict=True):
                rows[j] = row
        return np.stack(rows)

    def predict(
        self,
        pairs: Sequence[tuple[str, str]] | Sequence[Sequence[str]],
        *,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        precision: str = "fp32",
    ) -> list[float]:
        """Scores of (query, document) pairs, as :meth:`Reranker.predict` (``precision`` is the export's)."""
        if not pairs:
            return []
        queries, docs = [str(p[0]) for p in pairs], [str(p[1]) for p in pairs]
        if self.kind == "cross":
            return [float(s) for s in self._batched(list(zip(queries, docs, strict=True)), batch_size)]
        unique = list(dict.fromkeys(queries))
        q = self._batched(unique, batch_size)
        d = self._batched(docs, batch_size)
        index = {text: i for i, text in enumerate(unique)}
        return [float(q[index[x]] @ d[i]) / self.temperature for i, x in enumerate(queries)]
