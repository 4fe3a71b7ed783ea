"""Device seams, tested on this CPU-only machine with PyTorch's ``meta`` device: a tensor created on
the CPU and mixed with the model's raises ("Tensor on device cpu is not on the expected device
meta"), so a reader, a reranker or an objective that builds an id, a mask or noise on the wrong
device fails here as it would on a GPU."""

from __future__ import annotations

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama, tiny_t5

from gumbel_rerank import devices
from gumbel_rerank.config import ConfigError, ObjectiveConfig
from gumbel_rerank.objectives import Batch
from gumbel_rerank.objectives.gumbel import GumbelObjective
from gumbel_rerank.readers import make_reader
from gumbel_rerank.rerankers import Reranker

META = torch.device("meta")


@pytest.fixture(autouse=True)
def meta_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF's bidirectional (T5, BERT) mask builder asks a tensor for a Python bool (``.all()``) to skip
    itself, which a meta tensor cannot give; with the skip off the mask is built, on the device."""
    import transformers.masking_utils as masking_utils

    monkeypatch.setattr(masking_utils, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: False)


def on_device_only(model: torch.nn.Module) -> list[str]:
    """Hooks every module: a tensor argument on another device is recorded (meta kernels accept CPU
    index tensors, such as input ids, without raising, so the hooks catch what meta alone misses)."""
    wrong: list[str] = []

    def check(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:  # type: ignore[type-arg]
        for value in [*args, *kwargs.values()]:
            if isinstance(value, torch.Tensor) and value.device != META:
                wrong.append(f"{type(module).__name__} got a tensor on {value.device}")

    for module in model.modules():
        module.register_forward_pre_hook(check, with_kwargs=True)
    return wrong


@pytest.mark.parametrize("layout", ["parallel", "sequential", "fid"])
def test_readers_build_every_tensor_on_the_models_device(layout: str) -> None:
    model = (tiny_t5() if layout == "fid" else tiny_llama()).to(META)
    wrong = on_device_only(model)
    reader = make_reader(layout, model, byte_tokenizer("t5" if layout == "fid" else "decoder"))
    examples = make_examples()
    ctx = reader.prepare(examples)
    weights = torch.full((len(examples), 2, 4), 0.5, device=META)
    scores = reader.answer_logprob(ctx, weights)
    assert scores.token_logprobs.device == META and scores.token_mask.device == META
    assert reader.doc_attention(ctx, "scores").device == META
    assert reader.doc_attention(ctx, "value_norm").device == META
    assert not wrong, wrong[:3]


def test_a_cpu_tensor_reaching_a_meta_reader_is_caught() -> None:
    """The check itself: a context left on the CPU fails, so the test above can fail."""
    reader = make_reader("parallel", tiny_llama().to(META), byte_tokenizer("decoder"))
    ctx = reader.prepare(make_examples())
    ctx.ids = torch.zeros(ctx.ids.shape, dtype=torch.long)  # a CPU tensor in a meta context
    with pytest.raises((RuntimeError, NotImplementedError)):
        reader.answer_logprob(ctx, torch.full((2, 1, 4), 0.5, device=META))


def test_reranker_scores_and_the_gumbel_draw_stay_on_the_device(bert_dir: str) -> None:
    reranker = Reranker.from_pretrained(bert_dir, kind="cross", max_length=32).to(META)
    examples = make_examples()
    scores = reranker.score(examples)
    assert scores.device == META and reranker.device == META
    batch = Batch(examples, device=META, noise_seeds=[1, 2])
    assert batch.valid.device == META
    objective = GumbelObjective(ObjectiveConfig(k=2))
    draw = objective.draw(scores, batch.valid, 0.5, batch.question_generators(torch.Generator()), [4, 4])
    assert draw.masks.device == META  # the noise is drawn on the CPU (the same on every device), then moved


def test_the_noise_is_the_same_whatever_the_device() -> None:
    scores = torch.randn(2, 5, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 5, dtype=torch.bool)
    objective = GumbelObjective(ObjectiveConfig(k=2))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    cpu = objective.draw(scores, valid, 0.5, gens()).masks
    meta = objective.draw(scores.to(META), valid.to(META), 0.5, gens(), [5, 5]).masks
    again = objective.draw(scores, valid, 0.5, gens(), [5, 5]).masks  # host counts: the same draw
    assert meta.shape == cpu.shape and meta.device == META and torch.equal(cpu, again)


def test_device_and_dtype_settings() -> None:
    assert devices.pick("cpu") == torch.device("cpu")
    assert devices.pick("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.dtype("bfloat16") is torch.bfloat16
    assert devices.dtype("auto", "cpu") is torch.float32 and devices.dtype("auto", torch.device("cuda")) is torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            devices.pick("cuda")
        from gumbel_rerank.config import load
        from gumbel_rerank.training.run_state import _accelerator

        with pytest.raises(ConfigError, match="no CUDA device"):  # train refuses it before any work
            _accelerator(load(None, ["train.device=cuda"]))
    with pytest.raises(ValueError, match="reader.dtype"):
        devices.dtype("float8")


def test_docs_default_to_bf16_only_under_an_fp32_reader_on_a_cpu_with_native_bf16(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from gumbel_rerank.config import ReaderConfig
    from gumbel_rerank.readers import build_reader

    assert ReaderConfig().doc_dtype == "auto"
    for native in (True, False):
        monkeypatch.setattr(devices, "fast_bf16", lambda device=None, native=native: native)
        want = torch.bfloat16 if native else None
        assert devices.doc_dtype("auto", torch.float32, "cpu") is want
        assert devices.doc_dtype("auto", torch.bfloat16, "cpu") is None  # already bf16: no copy
        assert devices.doc_dtype("auto", torch.float32, torch.device("meta")) is None  # not a CPU: the reader's own
        assert devices.doc_dtype("", torch.float32, "cpu") is None
        assert devices.doc_dtype("float16", torch.float32, "cpu") is torch.float16
        reader = build_reader(ReaderConfig(layout="parallel"), tiny_llama(), byte_tokenizer("decoder"))
        assert reader.doc_model.dtype == (torch.bfloat16 if native else torch.float32)  # type: ignore[attr-defined]
        assert (reader.doc_model is reader.model) is not native  # type: ignore[attr-defined]
