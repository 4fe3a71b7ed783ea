"""adapt-reader: a LoRA adapter (peft) for the frozen reader, trained on answers with all candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import byte_tokenizer, tiny_llama

from gumbel_rerank.config import load
from gumbel_rerank.data import load_splits
from gumbel_rerank.readers import load_adapter, make_reader
from gumbel_rerank.training.adapt import AdaptSettings, adapt_reader, gold_only, reader_report

peft = pytest.importorskip("peft")


def lora(seed: int = 0):  # type: ignore[no-untyped-def]
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return peft.get_peft_model(tiny_llama(seed), config)


def small(tmp_path: Path, layout: str = "parallel"):  # type: ignore[no-untyped-def]
    cfg = load(
        None,
        [
            "data.num_train=8",
            "data.num_eval=4",
            "data.num_docs=4",
            "data.num_val=0",
            f"reader.layout={layout}",
            f"train.out_dir={tmp_path / 'train'}",
        ],
    )
    settings = AdaptSettings(
        steps=6,
        batch_size=2,
        lr=5e-3,
        warmup_steps=0,
        checkpoint_every=2,
        eval_questions=4,
        max_new_tokens=3,
        out_dir=str(tmp_path / f"adapter-{layout}"),
    )
    return cfg, settings


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_the_adapter_lowers_the_answer_nll_trains_only_itself_and_loads_merged(tmp_path: Path, layout: str) -> None:
    cfg, settings = small(tmp_path, layout)
    model = lora()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    result = adapt_reader(cfg, settings, progress=False, model=model, tokenizer=byte_tokenizer("decoder"))
    assert result.after["answer_nll_all"] < result.before["answer_nll_all"]  # it learned the training answers' shape
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)  # the base is untouched
    saved = result.run_dir / "adapter"
    assert (saved / "adapter_model.safetensors").is_file() and not list(saved.glob("*.bin"))
    merged = make_reader(layout, load_adapter(tiny_llama(0), str(saved)), byte_tokenizer("decoder"))
    assert not any(p.requires_grad for p in merged.model.parameters())  # frozen as any reader
    _, held = load_splits(cfg.data)
    again = reader_report(merged, held[:4], max_new_tokens=3)
    assert again["answer_nll_all"] == pytest.approx(result.after["answer_nll_all"], abs=1e-4)


def test_adapt_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    cfg, settings = small(tmp_path)
    straight = adapt_reader(cfg, settings, progress=False, model=lora(), tokenizer=byte_tokenizer("decoder"))
    cut = tmp_path / "cut"  # the same run, as if killed after its step-4 checkpoint
    shutil.copytree(straight.run_dir, cut)
    shutil.rmtree(cut / "checkpoint-6")
    shutil.rmtree(cut / "adapter")
    import dataclasses

    resumed = adapt_reader(
        cfg,
        dataclasses.replace(settings, out_dir=str(cut)),
        progress=False,
        resume=True,
        model=lora(),
        tokenizer=byte_tokenizer("decoder"),
    )
    a = load_file(str(straight.run_dir / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed.run_dir / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.before == straight.before


def test_gold_only_keeps_the_gold_docs(tmp_path: Path) -> None:
    cfg, _ = small(tmp_path)
    train, _ = load_splits(cfg.data)
    ex = gold_only(train[0])
    assert ex.docs and all(d.is_gold for d in ex.docs) and len(ex.docs) < len(train[0].docs)


def test_a_missing_adapter_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no adapter"):
        load_adapter(tiny_llama(0), str(tmp_path))


def test_a_merged_adapter_gives_the_reader_another_teacher_fingerprint(tmp_path: Path) -> None:
    """The merged LoRA changes only q_proj/v_proj in the middle: same embeddings, head and parameter
    count as the plain reader, which must not lend it its cached teachers."""
    from conftest import make_examples

    from gumbel_rerank.objectives.base import Batch
    from gumbel_rerank.objectives.teachers import TeacherCache, one_doc_teacher, reader_fingerprint

    model = lora()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter (lora_B starts at zero)
    model.save_pretrained(tmp_path / "adapter")
    plain = make_reader("parallel", tiny_llama(0), byte_tokenizer("decoder"))
    adapted = make_reader("parallel", load_adapter(tiny_llama(0), str(tmp_path / "adapter")), byte_tokenizer("decoder"))
    assert sum(p.numel() for p in plain.model.parameters()) == sum(p.numel() for p in adapted.model.parameters())
    assert reader_fingerprint(plain) == reader_fingerprint(make_reader("parallel", tiny_llama(0), byte_tokenizer("decoder")))
    assert reader_fingerprint(plain) != reader_fingerprint(adapted)
    cache, batch = TeacherCache(tmp_path / "teachers"), Batch(make_examples())
    first = one_doc_teacher(cache, plain, batch).token_logprobs
    second = one_doc_teacher(cache, adapted, batch).token_logprobs
    assert cache.hits == 0 and not torch.equal(first, second)  # computed for each, not read from the other's


def test_the_report_encodes_each_doc_once_and_equals_encoding_every_pass(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """reader_report's chunk cache (parallel layout): the gold docs' encodings are taken from the all-docs
    pass, the numbers stay those of encoding every pass afresh, and the reader is left without a cache."""
    from gumbel_rerank.readers.parallel import ParallelReader
    from gumbel_rerank.training import adapt

    cfg, _ = small(Path("unused"))
    _, held = load_splits(cfg.data)
    reader = make_reader("parallel", tiny_llama(0), byte_tokenizer("decoder"))
    encoded: list[int] = []
    real = ParallelReader._encode_chunk
    monkeypatch.setattr(ParallelReader, "_encode_chunk", lambda self, docs, kv: encoded.append(len(docs)) or real(self, docs, kv))
    cached = reader_report(reader, held[:4], max_new_tokens=3)
    once = sum(encoded)
    assert reader.doc_cache is None

    class NoCache:  # every get misses: each pass encodes its docs again
        def __init__(self, _mb: float) -> None:
            pass

        def get(self, _key):  # type: ignore[no-untyped-def]
            return None

        def put(self, _key, _value) -> None:  # type: ignore[no-untyped-def]
            pass

    monkeypatch.setattr(adapt, "DocCache", NoCache)
    encoded.clear()
    fresh = reader_report(reader, held[:4], max_new_tokens=3)
    distinct = sum(len({d.text for d in ex.docs}) for ex in held[:4])
    assert once == distinct < sum(encoded)
    assert cached == pytest.approx(fresh, abs=1e-5)
