"""Rerankers: the only trainable models. ``score(examples) -> (B, N)``.

* ``cross``: a cross-encoder over any sequence-classification encoder; a fresh 1-logit head is
  added when the checkpoint has none (e.g. a sentence-transformers embedding model).
* ``bi``: a bi-encoder; mean-pooled, L2-normalised embeddings, score = cosine / temperature.

Missing doc slots (a question with fewer than N docs) score ``MISSING``, a large finite negative.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .buckets import length_groups
from .data.schema import Example, Ranks, doc_text, doc_valid, num_docs
from .devices import fast_bf16
from .jsonsafe import usual_mode
from .models import resolve

log = logging.getLogger(__name__)
MISSING = -1e4
PRECISIONS = ("fp32", "bf16")


def _autocast(precision: str, device: torch.device | None = None) -> Any:
    """bfloat16 autocast on the encoder's device type (CPU or CUDA) for ``precision="bf16"``."""
    kind = device.type if device is not None and device.type in ("cpu", "cuda") else "cpu"
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


META_FILE = "gumbel_rerank.json"


class Reranker(Ranks, nn.Module):
    """A cross- or bi-encoder reranker over a Hugging Face encoder."""

    def __init__(self, encoder: Any, tokenizer: Any, *, kind: str, max_length: int = 256, temperature: float = 0.05):
        super().__init__()
        if kind not in ("cross", "bi"):
            raise ValueError(f"reranker kind must be 'cross' or 'bi', got {kind!r}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = max_length
        self.temperature = temperature
        self.prefix_cache: Any = None  # see keep_frozen_prefix
        self.precision = "fp32"  # reranker.precision: auto | fp32 | bf16, for scoring with a gradient (training)
        # score()'s inputs run in groups whose every input is at least this share of the group's longest
        # (0: one padded batch); with dropout, 0.65 was the fastest of {0, 0.5, 0.65, 0.8} for the MiniLM
        # bi-encoder and within 9% of the fastest for the cross-encoder (bench/reranker_step.py)
        self.bucket_ratio = 0.65

    def keep_frozen_prefix(self, budget_mb: float) -> bool:
        """Keep each text's hidden states after the frozen bottom layers for scoring without gradients
        (:mod:`gumbel_rerank.prefix_cache`); False (nothing kept) for a cross-encoder, an unsupported
        encoder or a zero budget."""
        from . import prefix_cache

        self.prefix_cache = None
        if budget_mb > 0 and self.kind == "bi" and prefix_cache.supports(self.encoder, self.tokenizer):
            self.prefix_cache = prefix_cache.PrefixCache(self.encoder, budget_mb)
        return self.prefix_cache is not None

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, kind: str = "cross", max_length: int = 256, temperature: float = 0.05
    ) -> Reranker:
        """Load from a saved reranker, a packaged name, a local checkpoint or a hub id."""
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        path = resolve(name_or_path)
        if not (Path(path) / META_FILE).exists() and (Path(path) / "reranker" / META_FILE).exists():
            path = str(Path(path) / "reranker")  # a training run directory: its trained reranker
        meta_file = Path(path) / META_FILE
        if meta_file.exists():  # a reranker saved by us: its own settings win
            meta = json.loads(meta_file.read_text())
            kind, max_length, temperature = meta["kind"], int(meta["max_length"]), float(meta["temperature"])
        tokenizer = AutoTokenizer.from_pretrained(path)
        if kind == "cross":
            encoder = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        else:
            encoder = AutoModel.from_pretrained(path)
        return cls(encoder, tokenizer, kind=kind, max_length=max_length, temperature=temperature)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @classmethod
    def from_config(cls, cfg: Any) -> Reranker:
        """The starting reranker a config's ``reranker`` section names, scoring in its ``precision``."""
        reranker = cls.from_pretrained(cfg.model, kind=cfg.kind, max_length=cfg.max_length, temperature=cfg.temperature)
        reranker.precision = cfg.precision
        return reranker

    def save_pretrained(self, path: str | Path) -> None:
        """safetensors weights, tokenizer and our settings: loadable by :meth:`from_pretrained`."""
        path = Path(path)
        self.encoder.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        meta = {"kind": self.kind, "max_length": self.max_length, "temperature": self.temperature}
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
        for weights in path.glob("*.safetensors"):  # written 0600 by the saver; readable as the umask allows
            usual_mode(weights)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised embeddings (X, H) of ``texts``, in groups of similar length
        (:meth:`_by_length`; one padded batch made a short text pay for the longest)."""
        return self._by_length(self._tokens(texts), self._embed_encoded)

    def _embed_encoded(self, enc: Any) -> torch.Tensor:
        """:meth:`embed` of tokenised, padded inputs on the device."""
        if self.prefix_cache is not None and not self.training and not torch.is_grad_enabled():
            hidden = self.prefix_cache.last_hidden_state(enc)  # the same, the frozen bottom read back
        else:
            hidden = self.encoder(**enc).last_hidden_state  # (X, L, H)
        hidden = hidden.float()  # pooled and normalised in float32 (bf16 autocast: cosine / 0.05 needs the bits)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def encode_pairs(self, queries: list[str], docs: list[str], **kwargs: Any) -> Any:
        """Cross-encoder inputs: the doc is truncated to fit ``max_length``; only when a query alone fills
        it (the tokenizer refuses "only_second" then) are both truncated, longest first."""
        try:
            return self.tokenizer(queries, docs, truncation="only_second", max_length=self.max_length, **kwargs)
        except Exception as err:  # tokenizers raises a bare Exception: "Truncation error: Sequence to truncate too short"
            if "truncate" not in str(err):
                raise
            return self.tokenizer(queries, docs, truncation="longest_first", max_length=self.max_length, **kwargs)

    def score_pairs(self, queries: list[str], docs: list[str]) -> torch.Tensor:
        """(X,) scores for X (query, doc) pairs. The inputs run in batches of similar length
        (:meth:`_by_length`), so that little of the encoder's work is padding."""
        if self.kind == "cross":
            return self._by_length(self.encode_pairs(queries, docs), lambda batch: self.encoder(**batch).logits[:, 0])
        unique = list(dict.fromkeys(queries))
        q = self._by_length(self._tokens(unique), self._embed_encoded)
        qi = torch.tensor([unique.index(x) for x in queries], device=q.device)
        return (q[qi] * self._by_length(self._tokens(docs), self._embed_encoded)).sum(-1) / self.temperature

    def _tokens(self, texts: list[str]) -> Any:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)

    def _by_length(self, enc: Any, run: Any) -> torch.Tensor:
        """``run`` over tokenised, unpadded inputs in groups of similar length (:func:`length_groups`),
        each padded to its own longest; the outputs in input order. Padding costs the encoder linearly
        and its attention quadratically: in training mode more so, since attention dropout takes
        PyTorch's unfused kernel (HotpotQA's 20 paragraphs a step padded to 256 tokens, mean about 100:
        MiniLM's training step with dropout 2.43 s -> 1.03 s, bench/reranker_step.py)."""
        outs, order = [], []
        for group in length_groups([len(ids) for ids in enc["input_ids"]], self.bucket_ratio):
            batch = self.tokenizer.pad({k: [enc[k][i] for i in group] for k in enc}, return_tensors="pt")
            outs.append(run(batch.to(self.device)))
            order += group
        out = torch.cat(outs)
        return out[torch.argsort(torch.tensor(order, device=out.device))]

    @torch.inference_mode()
    def predict(
        self,
        pairs: Sequence[tuple[str, str]] | Sequence[Sequence[str]],
        *,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        precision: str = "fp32",
    ) -> list[float]:
        """Scores of (query, document) pairs, as ``CrossEncoder.predict`` (eval mode, no gradient).

        Pairs (a bi-encoder: each distinct text) are tokenised once, sorted by token length (batches
        carry little padding) and scored in that order; the scores come back in input order. A
        bi-encoder's score is the cosine of the two embeddings over ``temperature``, as in
        :meth:`score`. ``precision="bf16"`` runs the encoder
        under CPU bfloat16 autocast: faster where the CPU has bf16 instructions, scores within about
        1e-2 of float32 (rankings can swap near-ties; measured in bench/rerank_throughput.py).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if not pairs:
            return []
        was_training = self.training
        self.eval()
        queries, docs = [str(p[0]) for p in pairs], [str(p[1]) for p in pairs]
        try:
            if self.kind == "bi":
                texts = list(dict.fromkeys(queries + docs))  # each text embedded once
                rows: dict[int, torch.Tensor] = {}
                enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
                for chunk, batch in self._longest_first(enc, batch_size, show_progress_bar):
                    with _autocast(precision, self.device):
                        rows.update(zip(chunk, self._embed_encoded(batch).float(), strict=True))
                at = {text: i for i, text in enumerate(texts)}
                q, d = torch.stack([rows[at[x]] for x in queries]), torch.stack([rows[at[x]] for x in docs])
                return ((q * d).sum(-1) / self.temperature).tolist()
            enc, scores = self.encode_pairs(queries, docs), [0.0] * len(pairs)
            for chunk, batch in self._longest_first(enc, batch_size, show_progress_bar):
                with _autocast(precision, self.device):
                    logits = self.encoder(**batch).logits[:, 0].float()
                for j, value in zip(chunk, logits.tolist(), strict=True):
                    scores[j] = value
        finally:
            self.train(was_training)
        return scores

    def _longest_first(self, enc: Any, batch_size: int, progress: bool) -> Iterator[tuple[list[int], Any]]:
        """Tokenised inputs (unpadded) in batches of ``batch_size``, longest first (little padding), each
        padded and on the device, with the indices of its inputs."""
        from tqdm.auto import tqdm

        order = sorted(range(len(enc["input_ids"])), key=lambda i: -len(enc["input_ids"][i]))
        for i in tqdm(range(0, len(order), batch_size), desc="predict", disable=not progress):
            chunk = order[i : i + batch_size]
            yield chunk, self.tokenizer.pad({k: [enc[k][j] for j in chunk] for k in enc}, return_tensors="pt").to(self.device)

    def forward(self, examples: list[Example]) -> torch.Tensor:
        """``score``: calling the module (as DistributedDataParallel does) scores a batch."""
        return self.score(examples)

    def score(self, examples: list[Example]) -> torch.Tensor:
        """(B, N) float32 scores of every question's docs; missing slots get ``MISSING``. With a gradient
        (training) and ``precision`` bf16 (or auto where bf16 is native), the encoder runs and backpropagates
        under bfloat16 autocast; without one (evaluation) it scores in float32."""
        B, N = len(examples), num_docs(examples)
        queries = [ex.question for ex in examples for _ in ex.docs]
        docs = [doc_text(d.title, d.text) for ex in examples for d in ex.docs]
        bf16 = self.precision == "bf16" or (self.precision == "auto" and fast_bf16(self.device))
        with _autocast("bf16" if bf16 and torch.is_grad_enabled() else "fp32", self.device):
            flat = self.score_pairs(queries, docs).float()
        out = torch.full((B, N), MISSING, dtype=flat.dtype, device=flat.device)
        return out.masked_scatter(doc_valid(examples, flat.device), flat)
