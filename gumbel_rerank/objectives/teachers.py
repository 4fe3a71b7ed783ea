"""Teacher signals of the distillation objectives: computed without gradient, cached, shared.

A teacher signal depends only on the frozen reader and the question, never on the reranker, so it
is computed once per (reader, signal, question) and reused across epochs and across objectives:
PDist, LSR and both EMDR variants share the one-doc-at-a-time answer log-probabilities, LOOP has
its leave-one-out ones, ADist its attention scores. The cache lives in memory and, given a
directory, on disk: one safetensors file per question and signal, written atomically, under a
sub-directory named by the reader's fingerprint (model, weights, layout, prompt, truncation).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import ObjectiveConfig
from ..data.schema import Example
from ..jsonsafe import usual_mode
from ..readers.base import AnswerScores, Reader
from .base import Batch, ObjectiveBase

VIEWS_PER_CALL = 8  # weight views per reader call: bounds memory when n views of n docs are scored


FINGERPRINT_SAMPLES = 1024  # values hashed per weight tensor, evenly strided over it


def _weights_sample(param: torch.Tensor) -> bytes:
    """An even stride of ``param``'s values: a dense change anywhere in it (a merged LoRA update, a
    fine-tuned layer) changes the sample, without hashing a multi-GB model whole."""
    flat = param.detach().reshape(-1)
    step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
    return flat[::step].float().cpu().numpy().tobytes()


def reader_fingerprint(reader: Reader) -> str:
    """A short hash of what determines the reader's outputs (not its Python identity). Every weight
    tensor is sampled, not only the first and last: a reader with an adapter merged into its middle
    layers has the same embeddings, head and parameter count as the plain one, and must not read
    the plain one's teachers."""
    model = reader.model
    params = list(model.parameters())
    weights = hashlib.sha1()
    for param in params:
        weights.update(_weights_sample(param))
    parts = {
        "class": type(reader).__name__,
        "layout": reader.layout,
        "model": getattr(getattr(model, "config", None), "name_or_path", type(model).__name__),
        "dtype": str(getattr(model, "dtype", "")),
        "doc_dtype": str(getattr(getattr(reader, "doc_model", model), "dtype", "")),
        "doc_cache_dtype": str(getattr(reader, "doc_cache_dtype", None)),
        "parameters": sum(p.numel() for p in params),
        "weights": weights.hexdigest(),
        "settings": {
            k: repr(v) for k, v in sorted(vars(reader).items()) if k in ("max_doc_tokens", "max_answer_tokens", "template")
        },
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def example_key(ex: Example) -> str:
    """Content hash of a question: same id with other docs or another answer is another question."""
    content = [ex.id, ex.question, ex.answers[0] if ex.answers else "", [(d.id, d.title, d.text) for d in ex.docs]]
    return hashlib.sha1(json.dumps(content).encode()).hexdigest()


class TeacherCache:
    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else None
        self.memory: dict[tuple[str, str, str], torch.Tensor] = {}
        self.hits = 0
        self.misses = 0
        self._fingerprints: dict[int, str] = {}

    def _fingerprint(self, reader: Reader) -> str:
        if id(reader) not in self._fingerprints:
            self._fingerprints[id(reader)] = reader_fingerprint(reader)
        return self._fingerprints[id(reader)]

    def _path(self, fp: str, kind: str, key: str) -> Path | None:
        return None if self.directory is None else self.directory / fp / kind / f"{key}.safetensors"

    def get(self, reader: Reader, kind: str, batch: Batch, compute: Callable[[Batch], list[torch.Tensor]]) -> list[torch.Tensor]:
        """One tensor per question of ``batch``; ``compute`` runs only on the questions not cached yet."""
        fp = self._fingerprint(reader)
        keys = [(fp, kind, example_key(ex)) for ex in batch.examples]
        found: list[torch.Tensor | None] = []
        for key in keys:
            value = self.memory.get(key)
            path = self._path(*key)
            if value is None and path is not None and path.exists():
                value = load_file(path)["teacher"]
                self.memory[key] = value
            found.append(value)
        missing = [b for b, v in enumerate(found) if v is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            sub = batch if len(missing) == len(keys) else Batch([batch.examples[b] for b in missing], device=batch.device)
            with torch.no_grad():
                computed = compute(sub)
            for b, value in zip(missing, computed, strict=True):
                value = value.detach().float().cpu().contiguous()  # kept and written on the CPU
                self.memory[keys[b]] = value
                self._write(keys[b], value)
                found[b] = value
        return [v for v in found if v is not None]

    def _write(self, key: tuple[str, str, str], value: torch.Tensor) -> None:
        path = self._path(*key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"teacher": value}, tmp)
            os.replace(usual_mode(tmp), path)  # atomic: a reader never sees half a file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# ---- the signals ---------------------------------------------------------------------------------


def _view_logprobs(reader: Reader, batch: Batch, keep_alone: bool) -> list[torch.Tensor]:
    """Per question (n_docs, T) answer token log-probs with one doc alone (or one doc left out)."""
    N = batch.valid.shape[1]
    eye = torch.eye(N, device=batch.valid.device)
    views = eye if keep_alone else 1 - eye  # (N views, N docs)
    ctx = batch.context(reader)
    chunks = []
    for start in range(0, N, VIEWS_PER_CALL):
        w = views[start : start + VIEWS_PER_CALL].unsqueeze(0) * batch.valid.unsqueeze(1)  # (B, m, N)
        scores = reader.answer_logprob(ctx, w)
        chunks.append(scores.token_logprobs)
    lp = torch.cat(chunks, dim=1)  # (B, N, T)
    return [lp[b, : len(ex.docs)][:, scores.token_mask[b]] for b, ex in enumerate(batch.examples)]


def one_doc_logprobs(reader: Reader, batch: Batch) -> list[torch.Tensor]:
    return _view_logprobs(reader, batch, keep_alone=True)


def leave_one_out_logprobs(reader: Reader, batch: Batch) -> list[torch.Tensor]:
    return _view_logprobs(reader, batch, keep_alone=False)


def pad_token_logprobs(values: list[torch.Tensor], num_docs: int, device: torch.device | str = "cpu") -> AnswerScores:
    """Per-question (n_b, T_b) -> (B, N, T) log-probs and (B, T) token mask (left-aligned), on ``device``."""
    T = max(v.shape[1] for v in values)
    out = torch.zeros(len(values), num_docs, T)
    mask = torch.zeros(len(values), T, dtype=torch.bool)
    for b, v in enumerate(values):
        out[b, : v.shape[0], : v.shape[1]] = v
        mask[b, : v.shape[1]] = True
    return AnswerScores(out.to(device), mask.to(device))


def pad_doc_scores(values: list[torch.Tensor], num_docs: int, device: torch.device | str = "cpu") -> torch.Tensor:
    out = torch.zeros(len(values), num_docs)
    for b, v in enumerate(values):
        out[b, : v.shape[0]] = v
    return out.to(device)


def one_doc_teacher(cache: TeacherCache, reader: Reader, batch: Batch) -> AnswerScores:
    """(B, N, T) log p(answer token | question, doc i alone) and the (B, T) token mask (cached)."""
    values = cache.get(reader, "one_doc", batch, lambda b: one_doc_logprobs(reader, b))
    return pad_token_logprobs(values, batch.valid.shape[1], batch.valid.device)


class TeacherObjective(ObjectiveBase):
    """What every distillation objective holds: its config and the (shared) teacher cache."""

    def __init__(self, cfg: ObjectiveConfig, teachers: TeacherCache | None = None) -> None:
        super().__init__(cfg)
        self.teachers = teachers or TeacherCache()
