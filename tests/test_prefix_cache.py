"""The frozen-bottom cache: the same scores as running the whole encoder, fewer layers run, and
nothing stale when a frozen weight changes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import VOCAB, byte_tokenizer, make_examples
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from gumbel_rerank.config import ConfigError, from_dict, validate
from gumbel_rerank.evaluation.evaluate import score_all
from gumbel_rerank.rerankers import Reranker
from gumbel_rerank.training.stabilize import restrict_trainable


def _bi(kind: str = "bert", layers: int = 4) -> Reranker:
    torch.manual_seed(0)
    common: dict[str, Any] = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4, pad_token_id=0
    )
    if kind == "bert":
        encoder = BertModel(BertConfig(max_position_embeddings=512, **common))
    else:  # positions counted from the padding id, as RoBERTa does
        encoder = RobertaModel(RobertaConfig(max_position_embeddings=514, **common))
    return Reranker(encoder, byte_tokenizer("bert"), kind="bi", max_length=64, temperature=0.05)


def _layer_calls(reranker: Reranker) -> list[int]:
    calls = [0] * len(reranker.encoder.encoder.layer)
    for i, layer in enumerate(reranker.encoder.encoder.layer):
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_cached_scores_equal_the_whole_encoder_and_skip_the_frozen_layers(kind: str) -> None:
    examples = make_examples()  # docs of different lengths: padding differs between batches
    plain, cached = _bi(kind), _bi(kind)
    for r in (plain, cached):
        restrict_trainable(r, 2)
    assert cached.keep_frozen_prefix(64) and cached.prefix_cache.depth() == 2
    calls = _layer_calls(cached)
    want = score_all(plain, examples, batch_size=1)
    first = score_all(cached, examples, batch_size=2)  # other batches than the reference: other padding
    assert calls[0] == calls[2] > 0
    again = score_all(cached, examples, batch_size=1)
    assert calls[0] < calls[2]  # the second pass ran only the top layers
    for got in (first, again):
        for a, b in zip(got, want, strict=True):
            assert a == pytest.approx(b, abs=1e-4)
    # the top layers train: their new weights are used, the kept bottom still is right
    with torch.no_grad():
        for r in (plain, cached):
            torch.manual_seed(1)  # the same move for both
            for p in r.encoder.encoder.layer[3].parameters():
                p.add_(0.05 * torch.randn_like(p))
    moved, want = score_all(cached, examples), score_all(plain, examples)
    assert moved != again
    for a, b in zip(moved, want, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_a_changed_frozen_weight_or_training_mode_bypasses_what_was_kept() -> None:
    examples = make_examples()
    plain, cached = _bi(), _bi()
    for r in (plain, cached):
        restrict_trainable(r, 2)
    cached.keep_frozen_prefix(64)
    score_all(cached, examples)
    assert cached.prefix_cache.store.items
    with torch.no_grad():  # a frozen weight changes in place (e.g. a user's load_state_dict)
        for r in (plain, cached):
            r.encoder.embeddings.word_embeddings.weight.mul_(1.5)
    for a, b in zip(score_all(cached, examples), score_all(plain, examples), strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    # a training forward pass (dropout, gradients) never reads the cache: every layer runs
    calls = _layer_calls(cached)
    cached.train()
    cached.score(examples).sum().backward()
    assert calls[0] == calls[-1] == 2  # queries, then docs
    for p in cached.encoder.parameters():  # all trainable: nothing frozen to keep
        p.requires_grad_(True)
    assert cached.prefix_cache.depth() == 0


def test_only_bi_encoders_of_a_supported_family_and_a_positive_budget_keep_anything(bert_dir: str) -> None:
    assert not Reranker.from_pretrained(bert_dir, kind="cross", max_length=64).keep_frozen_prefix(64)
    assert not _bi().keep_frozen_prefix(0)
    with pytest.raises(ConfigError, match="prefix_cache_mb"):
        validate(from_dict({"eval": {"prefix_cache_mb": -1}}))


def test_kept_states_pass_to_a_copy_with_the_same_frozen_bottom_and_not_to_another() -> None:
    import copy

    examples = make_examples()
    start = _bi()
    restrict_trainable(start, 2)
    first = copy.deepcopy(start)
    first.keep_frozen_prefix(64)
    want = score_all(first, examples)
    clone = copy.deepcopy(first)  # its own empty cache, bound to its own encoder
    assert clone.prefix_cache.encoder is clone.encoder and not clone.prefix_cache.store.items
    assert score_all(clone, examples) == want
    same = copy.deepcopy(start)  # a sweep's next row: a fresh copy of the same start
    same.prefix_cache = first.prefix_cache.rebind(same.encoder)
    calls = _layer_calls(same)
    assert score_all(same, examples) == want and calls[0] == 0 and calls[2] > 0
    other = _bi()
    restrict_trainable(other, 2)
    with torch.no_grad():
        other.encoder.encoder.layer[0].output.dense.weight.mul_(0.5)  # another frozen bottom
    plain = copy.deepcopy(other)
    other.prefix_cache = first.prefix_cache.rebind(other.encoder)
    calls = _layer_calls(other)
    got = score_all(other, examples)
    assert calls[0] > 0
    for a, b in zip(got, score_all(plain, examples), strict=True):
        assert a == pytest.approx(b, abs=1e-4)
