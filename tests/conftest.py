"""Tiny random models built from configs, and a byte-level tokenizer built in memory: no network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from gumbel_rerank.data.schema import Doc, Example

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite draws the same Hypothesis cases on every run, so a red CI is a regression, not a lucky draw.
# HYPOTHESIS_PROFILE=explore draws fresh ones (CONTRIBUTING.md); pin what it finds with @example.
settings.register_profile("repro", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repro"))
SPECIALS = ["<pad>", "<s>", "</s>", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def byte_tokenizer(post: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges (about 263 tokens); ``post`` picks the special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if post == "decoder":  # BOS first, like Llama
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    elif post == "t5":  # EOS last, like T5
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    else:  # BERT pairs
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 3), ("[SEP]", 4)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


VOCAB = len(SPECIALS) + 256


def _tiny_causal(config_cls: type, model_cls: type, seed: int) -> Any:
    torch.manual_seed(seed)
    cfg = config_cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return model_cls(cfg)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    return _tiny_causal(LlamaConfig, LlamaForCausalLM, seed)


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    return _tiny_causal(Qwen2Config, Qwen2ForCausalLM, seed)


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    return T5ForConditionalGeneration(cfg)


def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved tiny BERT classifier + tokenizer directory, loadable like any checkpoint."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def save_tiny_bert(path: Path, **config: Any) -> str:
    """A tiny BERT classifier (seed 0; ``config`` overrides, e.g. no dropout) and its tokenizer in ``path``."""
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=0,
        **config,
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    byte_tokenizer("bert").save_pretrained(path)
    return str(path)


def make_examples() -> list[Example]:
    def ex(i: int, n: int) -> Example:
        docs = tuple(
            Doc(
                id=f"q{i}d{j}",
                title=f"Title {j}",
                text=f"Doc {j} of question {i} says {'x' * (3 + j + i)}.",
                is_gold=j < 2,
                has_answer=j == 1,
            )
            for j in range(n)
        )
        return Example(id=f"q{i}", question=f"What does question {i} ask?", answers=(f"answer {i}",), docs=docs)

    return [ex(0, 4), ex(1, 3)]  # different doc counts and lengths: padding is exercised


@pytest.fixture
def examples() -> list[Example]:
    return make_examples()


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_bert_dir(tmp_path_factory)
