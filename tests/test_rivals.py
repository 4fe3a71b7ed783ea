"""The rival objectives against independent references: brute-force marginals, explicit
leave-one-out runs, log-space KL, temperature limits, attention aggregation and the teacher cache."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_examples
from test_readers import READERS

from gumbel_rerank.config import ObjectiveConfig
from gumbel_rerank.objectives import OBJECTIVES, Batch, TeacherCache
from gumbel_rerank.objectives.base import kl_to_student, student_log_probs
from gumbel_rerank.objectives.emdr import EMDRObjective
from gumbel_rerank.objectives.loop import LOOPObjective
from gumbel_rerank.objectives.teachers import one_doc_teacher
from gumbel_rerank.readers.base import attention_per_doc

EXACT = [r for r in READERS if r[0] in ("llama-parallel", "qwen2-parallel", "t5-fid")]  # zero weight == removed
EXACT_IDS = [r[0] for r in EXACT]


def _equal_length_examples() -> list:  # type: ignore[type-arg]
    """Docs of one question with equal token counts: removing one leaves the question's position unchanged."""
    import dataclasses

    out = []
    for ex in make_examples():
        width = max(len(d.text) for d in ex.docs)
        docs = tuple(dataclasses.replace(d, text=d.text.ljust(width, "."), title="T") for d in ex.docs)
        out.append(dataclasses.replace(ex, docs=docs))
    return out


@pytest.mark.parametrize(("name", "reader", "ref"), EXACT, ids=EXACT_IDS)
def test_loop_teacher_equals_explicit_leave_one_out_runs(name: str, reader, ref) -> None:  # type: ignore[no-untyped-def]
    examples = _equal_length_examples()
    teacher = LOOPObjective(ObjectiveConfig(name="loop")).teacher(Batch(examples), reader)
    for b, ex in enumerate(examples):
        n = len(ex.docs)
        for i in range(n):
            expected = -ref(reader, ex, [j for j in range(n) if j != i]).mean()
            assert teacher[b, i].item() == pytest.approx(expected.item(), abs=2e-5)


@pytest.mark.parametrize("per_token", [False, True], ids=["sequence", "per-token"])
@pytest.mark.parametrize(("name", "reader", "ref"), EXACT, ids=EXACT_IDS)
def test_emdr_equals_brute_force_marginal_likelihood(name: str, reader, ref, per_token: bool) -> None:  # type: ignore[no-untyped-def]
    examples = _equal_length_examples()
    scores = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    theta = 0.7
    cfg = ObjectiveConfig(name="emdr", temperature_score=theta, emdr_per_token=per_token)
    loss = EMDRObjective(cfg)(Batch(examples), scores, reader, torch.Generator()).loss
    total = 0.0
    for b, ex in enumerate(examples):
        n = len(ex.docs)
        z = sum(math.exp(scores[b, j].item() / theta) for j in range(n))
        prior = [math.exp(scores[b, i].item() / theta) / z for i in range(n)]
        token_lp = [ref(reader, ex, [i]).double() for i in range(n)]  # doc i alone, run on its own
        if per_token:
            total -= sum(
                math.log(sum(prior[i] * math.exp(token_lp[i][t].item()) for i in range(n))) for t in range(len(token_lp[0]))
            )
        else:
            total -= math.log(sum(prior[i] * math.exp(token_lp[i].sum().item()) for i in range(n)))
    assert loss.item() == pytest.approx(total / len(examples), rel=1e-4)


def test_kl_is_computed_in_log_space() -> None:
    """Teacher logits 1e5 apart at temperature 1e-3: a probability-space KL gives NaN, ours is exact."""
    valid = torch.ones(1, 3, dtype=torch.bool)
    teacher = torch.tensor([[0.0, -50.0, -100.0]])
    scores = torch.tensor([[0.3, 0.1, -0.2]], requires_grad=True)
    student = student_log_probs(scores, valid, 1.0)
    loss = kl_to_student(teacher, student, valid, temperature=1e-3)
    loss.backward()
    assert loss.item() == pytest.approx(-student[0, 0].item(), rel=1e-6)  # target is one-hot on doc 0
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    naive_target = torch.softmax(teacher / 1e-3, -1)
    naive = (naive_target * (naive_target.log() - student)).sum()
    assert torch.isnan(naive)  # what the log-space form avoids


def test_temperatures_behave_as_documented() -> None:
    """temperature_gold -> 0: the target is one-hot on the best doc; -> large: uniform.
    temperature_score scales the reranker's scores before its softmax."""
    valid = torch.tensor([[True, True, True, False]])
    teacher = torch.tensor([[1.0, 3.0, 2.0, 99.0]])  # the 4th slot is padding and must not count
    uniform = torch.log(torch.tensor([[1 / 3, 1 / 3, 1 / 3, 1.0]])) * valid
    cold = kl_to_student(teacher, uniform, valid, temperature=1e-4)
    hot = kl_to_student(teacher, uniform, valid, temperature=1e4)
    assert cold.item() == pytest.approx(math.log(3), rel=1e-5)  # KL(one-hot || uniform over 3)
    assert hot.item() == pytest.approx(0.0, abs=1e-6)
    scores = torch.tensor([[2.0, 0.0, 1.0, 5.0]])
    p = student_log_probs(scores, valid, 0.5).exp()
    expected = torch.softmax(torch.tensor([4.0, 0.0, 2.0]), -1)
    assert torch.allclose(p[0, :3], expected)  # the padded slot's score 5.0 takes no mass


def test_attention_aggregation_on_hand_built_tensors() -> None:
    """Two keys of doc 0, one of doc 1, one prefix key; 1 layer, 2 heads (1 kv head), 2 queries (1 counted)."""
    att = torch.tensor(
        [[[[0.5, 0.25, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4]], [[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]]]
    )  # (B=1, H=2, Q=2, S=4)
    values = torch.tensor([[[[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]]]])  # norms 5, 1, 2, 1
    key_doc = torch.tensor([[0, 0, 1, -1]])
    key_valid = torch.ones(1, 4, dtype=torch.bool)
    queries = torch.tensor([[True, False]])
    vn = attention_per_doc([att], [values], key_doc, key_valid, queries, 2, "value_norm")
    # Atlas's normalisation: mean over the 2 heads, divided by 256 x 1 layer x 1 counted query
    atlas = 2 * 256 * 1 * 1
    assert torch.allclose(vn, torch.tensor([[0.5 * 5 + 0.25 * 1 + 0.25 * 5 + 0.25 * 1, 0.125 * 2 + 0.25 * 2]]) / atlas)
    sc = attention_per_doc([att], [values], key_doc, key_valid, queries, 2, "scores")
    doc0 = (math.log(0.5) + math.log(0.25) + 2 * math.log(0.25)) / 4
    doc1 = (math.log(0.125) + math.log(0.25)) / 2
    assert torch.allclose(sc, torch.tensor([[doc0, doc1]]))


@pytest.mark.parametrize("aggregation", ["scores", "value_norm"])
@pytest.mark.parametrize(("name", "reader", "ref"), EXACT, ids=EXACT_IDS)
def test_attention_teacher_gives_identical_docs_identical_scores(name: str, reader, ref, aggregation: str) -> None:  # type: ignore[no-untyped-def]
    """Fid and parallel encode every doc alone from the same position: a duplicated doc gets the same mass."""
    import dataclasses

    ex = make_examples()[0]
    docs = (ex.docs[0], ex.docs[1], dataclasses.replace(ex.docs[1], id="copy"), ex.docs[3])
    scores = reader.doc_attention(reader.prepare([dataclasses.replace(ex, docs=docs)]), aggregation)
    # value_norm is divided by 256 x layers x tokens (Atlas): compare it relative to its size
    scale = 1.0 if aggregation == "scores" else scores[0].abs().max().item()
    assert abs(scores[0, 1].item() - scores[0, 2].item()) < 1e-6 * scale
    assert abs(scores[0, 0].item() - scores[0, 1].item()) > 1e-5 * scale  # different docs do differ (random tiny model)


class CountingReader:
    """Wraps a reader and counts answer_logprob calls (to prove the cache is used)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.layout, self.model, self.calls = inner, inner.layout, inner.model, 0

    def prepare(self, examples, *, with_answer: bool = True):  # type: ignore[no-untyped-def]
        return self.inner.prepare(examples, with_answer=with_answer)

    def answer_logprob(self, context, doc_weights):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.inner.answer_logprob(context, doc_weights)


def test_teacher_cache_is_shared_across_objectives_and_persists_on_disk(tmp_path) -> None:  # type: ignore[no-untyped-def]
    reader = CountingReader(READERS[0][1])
    examples = make_examples()
    cache = TeacherCache(tmp_path)
    scores = torch.zeros(2, 4)
    first = OBJECTIVES["pdist"](ObjectiveConfig(name="pdist"), cache)(Batch(examples), scores, reader, torch.Generator())
    calls = reader.calls
    assert calls > 0 and cache.misses == 2
    for name in ("emdr", "lsr", "pdist"):  # the one-doc teacher is computed once for all three
        OBJECTIVES[name](ObjectiveConfig(name=name), cache)(Batch(examples), scores, reader, torch.Generator())
    assert reader.calls == calls and cache.hits == 6
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)  # one per question, no temp files left
    fresh = TeacherCache(tmp_path)  # a new process: read from disk, no reader call
    again = OBJECTIVES["pdist"](ObjectiveConfig(name="pdist"), fresh)(Batch(examples), scores, reader, torch.Generator())
    assert reader.calls == calls and fresh.hits == 2
    assert torch.equal(first.loss, again.loss)
    lp = one_doc_teacher(TeacherCache(), reader.inner, Batch(examples)).token_logprobs
    cached = one_doc_teacher(fresh, reader, Batch(examples)).token_logprobs
    assert torch.equal(lp, cached)


def test_teacher_cache_tells_readers_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Another model (other weights) or another layout must not read the first one's teachers."""
    examples = make_examples()
    cache = TeacherCache(tmp_path)
    a, b = READERS[0][1], READERS[2][1]  # llama parallel and qwen2 parallel
    seq = READERS[1][1]  # llama sequential (same weights as a? no: separately built) -> other fingerprint
    for r in (a, b, seq):
        one_doc_teacher(cache, r, Batch(examples))
    assert cache.misses == 6 and cache.hits == 0
    assert len({p.parent.parent.name for p in tmp_path.rglob("*.safetensors")}) == 3
