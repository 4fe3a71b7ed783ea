"""The calibrated G-Rerank mask, its telemetry, the straight-through gradient, and the rivals'
published settings, LR schedule, bridge-label hygiene and the answer end marker (issue 14)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import byte_tokenizer, make_examples, tiny_llama, tiny_t5
from test_objectives import ClosedFormReader

from gumbel_rerank.config import SCHEDULES, ObjectiveConfig
from gumbel_rerank.data.convert import Loaded, summary
from gumbel_rerank.data.schema import Doc, Example
from gumbel_rerank.evaluation.evaluate import per_question
from gumbel_rerank.objectives import Batch
from gumbel_rerank.objectives.adist import ADistObjective
from gumbel_rerank.objectives.gumbel import GumbelObjective
from gumbel_rerank.readers import make_reader
from gumbel_rerank.readers.fid import FiDReader
from gumbel_rerank.topk import hard_topk
from gumbel_rerank.training.schedule import lr_factor


def ten_docs(batch_size: int = 16) -> list[Example]:
    docs = tuple(Doc(id=f"d{i}", title="", text=f"doc {i}", is_gold=i < 2, has_answer=i == 1) for i in range(10))
    return [Example(f"q{b}", "question?", ("answer",), docs) for b in range(batch_size)]


SCALES = {"bi-encoder cosine / 0.05": 5.0, "fresh cross-encoder head": 0.01, "unit": 1.0}


@pytest.mark.parametrize("scale", list(SCALES.values()), ids=list(SCALES))
def test_default_mask_holds_k_docs_at_any_score_scale(scale: float) -> None:
    examples = ten_docs()
    scores = torch.randn(len(examples), 10, generator=torch.Generator().manual_seed(0)) * scale
    obj = GumbelObjective(ObjectiveConfig(k=5, log_hard_loss=False))
    out = obj(Batch(examples), scores, ClosedFormReader(torch.rand(len(examples), 10)), torch.Generator().manual_seed(1))
    assert 0.8 * 5 <= out.metrics["mask_sum"] <= 1.2 * 5
    assert out.metrics["mask_distinct"] == pytest.approx(5.0)
    assert 0.0 <= out.metrics["mask_overlap"] <= 1.0


def test_the_old_fixed_kappa_mask_collapses_on_bi_encoder_scores_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """The shipped behaviour before the calibration: a 'top-5' mask holding about 2 docs."""
    examples = ten_docs()
    scores = torch.randn(len(examples), 10, generator=torch.Generator().manual_seed(0)) * 5.0
    obj = GumbelObjective(ObjectiveConfig(k=5, relaxation="l2x", calibration="none", log_hard_loss=False))
    reader = ClosedFormReader(torch.rand(len(examples), 10))
    with caplog.at_level(logging.WARNING, logger="gumbel_rerank.objectives.gumbel"):
        sums = [obj(Batch(examples), scores, reader, torch.Generator().manual_seed(s)).metrics["mask_sum"] for s in range(12)]
    assert max(sums) < 2.5
    warnings = [r for r in caplog.records if "objective.calibration=standardize" in r.getMessage()]
    assert len(warnings) == 1  # after 10 consecutive low steps, once


def test_mask_distinct_counts_the_union_of_the_l2x_argmaxes() -> None:
    obj = GumbelObjective(ObjectiveConfig(k=3, relaxation="l2x", calibration="none", noise=False))
    valid = torch.ones(1, 4, dtype=torch.bool)
    drawn = obj.draw(torch.tensor([[3.0, 0.0, 0.0, 1.0]]), valid, 0.5, [torch.Generator()])
    assert drawn.picks.sum().item() == 1  # without noise the 3 draws coincide: one distinct doc
    metrics = obj.telemetry(drawn, torch.tensor([[3.0, 0.0, 0.0, 1.0]]), valid)
    assert metrics["mask_distinct"] == 1.0 and metrics["mask_overlap"] == pytest.approx(1 / 3)


def float64_readers() -> list[tuple[str, object]]:
    return [
        ("parallel", make_reader("parallel", tiny_llama().double(), byte_tokenizer("decoder"))),
        ("fid", FiDReader(tiny_t5().double(), byte_tokenizer("t5"))),
    ]


@pytest.mark.parametrize(("layout", "reader"), float64_readers(), ids=["parallel", "fid"])
def test_straight_through_gradient_of_an_unselected_doc_has_the_sign_of_the_soft_path(layout: str, reader) -> None:  # type: ignore[no-untyped-def]
    """Before the fix the hard forward gave unselected docs an exact 0, clamped in log space: gradient 0."""
    batch = Batch(make_examples()[:1])
    base = {"k": 2, "tau": 0.5, "log_hard_loss": False}
    st, soft = GumbelObjective(ObjectiveConfig(straight_through=True, **base)), GumbelObjective(ObjectiveConfig(**base))
    checked = 0
    for seed in range(3):
        w = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(100 + seed)) * 3
        x = w.clone().requires_grad_(True)
        st(batch, x, reader, torch.Generator().manual_seed(seed)).loss.backward()
        assert x.grad is not None
        masks = soft.mask(w, batch.valid, 0.5, batch.question_generators(torch.Generator().manual_seed(seed)))
        for j in torch.nonzero(hard_topk(masks[:, 0], k=2)[0] == 0).flatten().tolist():
            e = torch.zeros(1, 4, dtype=torch.float64)
            e[0, j] = 1e-2
            up, down = (soft(batch, w + d, reader, torch.Generator().manual_seed(seed)).loss.item() for d in (e, -e))
            fd = (up - down) / 2e-2
            assert x.grad[0, j] != 0 and math.copysign(1, x.grad[0, j].item()) == math.copysign(1, fd), (seed, j, fd)
            checked += 1
    assert checked == 6  # 2 unselected docs of 4, three draws


def test_adist_teacher_temperature_is_the_published_one() -> None:
    assert ADistObjective(ObjectiveConfig(name="adist", adist_aggregation="scores")).temperature == 1.0  # FiD
    vn = ObjectiveConfig(name="adist", adist_aggregation="value_norm", temperature_gold=0.01)
    assert ADistObjective(vn).temperature == 0.01  # Atlas
    assert ADistObjective(ObjectiveConfig(name="adist", adist_temperature=0.3)).temperature == 0.3


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_schedule_equals_transformers_get_scheduler(kind: str, warmup: int) -> None:
    from transformers import get_scheduler

    total, lr = 12, 1e-3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    name = "constant_with_warmup" if kind == "constant" else kind
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr * lr_factor(step, warmup=warmup, total=total, kind=kind))
        opt.step()
        sched.step()


def test_yes_no_questions_are_not_bridge_questions() -> None:
    """Gold docs without any answer-bearing gold doc (comparisons answered yes/no) have no bridge."""
    yes_no = Example(
        "c",
        "Are both French?",
        ("yes",),
        (Doc("a", "", "A is French.", is_gold=True), Doc("b", "", "B is French.", is_gold=True), Doc("c", "", "other")),
    )
    bridge = Example(
        "b",
        "Where was X's director born?",
        ("Paris",),
        (
            Doc("a", "", "X was directed by Y.", is_gold=True),
            Doc("b", "", "Y was born in Paris.", is_gold=True, has_answer=True),
            Doc("c", "", "other"),
        ),
    )
    rows = per_question([yes_no, bridge], [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]], [2])
    assert math.isnan(rows[0]["bridge_R@2"]) and math.isnan(rows[0]["bridge_RR"])
    assert rows[0]["R@2"] == 0.5  # gold recall still counts the comparison question
    assert rows[1]["bridge_R@2"] == 0.0
    s = summary(Loaded([yes_no, bridge]))
    assert s["excluded_from_bridge_metrics"] == 1 and s["share_with_bridge"] == 0.5


def test_every_layout_scores_the_answer_and_its_end_marker() -> None:
    """FiD scores answer + EOS; the decoder layouts score answer + the prompt's end marker (newline)."""
    examples = make_examples()
    fid = FiDReader(tiny_t5(), byte_tokenizer("t5"))
    labels = fid.prepare(examples).labels
    for b in range(len(examples)):
        assert labels[b][labels[b] != -100][-1].item() == fid.tokenizer.eos_token_id
    for layout in ("parallel", "sequential"):
        reader = make_reader(layout, tiny_llama(), byte_tokenizer("decoder"))
        ctx = reader.prepare(examples)
        end = reader.tokenizer(reader.template.end, add_special_tokens=False)["input_ids"]
        answer = reader.tokenizer(" answer 0", add_special_tokens=False)["input_ids"]
        assert int(ctx.answer_len[0]) == len(answer) + len(end)
        assert ctx.ids[0, -len(end) :].tolist() == end  # the last scored tokens are the end marker
        assert reader.tokenizer.decode(ctx.ids[0, -int(ctx.answer_len[0]) :]) == " answer 0\n"
