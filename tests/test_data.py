"""Schema, dataset readers and the synthetic generator."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumbel_rerank.data import generate, read_examples
from gumbel_rerank.data.formats import parse_record
from gumbel_rerank.data.schema import DataError, contains_answer, write_jsonl


def test_synthetic_is_deterministic_and_labelled() -> None:
    a, b = generate(40, seed=3), generate(40, seed=3)
    assert a == b and a != generate(40, seed=4)
    for ex in a:
        assert len(ex.docs) == 8
        gold = [d for d in ex.docs if d.is_gold]
        assert len(gold) == 2 and sum(d.is_bridge for d in gold) == 1 and sum(d.has_answer for d in gold) == 1
        bridge = next(d for d in gold if d.is_bridge)
        answer = next(d for d in gold if d.has_answer)
        assert bridge.title in ex.question and answer.title in bridge.text  # the hop: question -> bridge -> answer
        assert ex.answers[0] in answer.text and not contains_answer(bridge.text, ex.answers)
        assert ex.answers[0] not in ex.question
        assert len({d.id for d in ex.docs}) == len(ex.docs)


def test_synthetic_gold_positions_are_spread() -> None:
    positions = {i for ex in generate(60) for i, d in enumerate(ex.docs) if d.is_gold}
    assert positions == set(range(8))


def test_jsonl_round_trip(tmp_path: Path) -> None:
    examples = generate(5)
    path = tmp_path / "x.jsonl"
    write_jsonl(examples, path)
    assert list(read_examples(path)) == examples


def test_eval_start_fixes_the_held_out_questions_whatever_num_train(tmp_path: Path) -> None:
    """A learning curve trains on 3, then 6 questions and is always scored on the same held-out ones."""
    from gumbel_rerank.config import ConfigError, load
    from gumbel_rerank.data import load_splits

    path = tmp_path / "x.jsonl"
    write_jsonl(generate(12), path)
    held = []
    for n in (3, 6):
        cfg = load(None, [f"data.source={path}", f"data.num_train={n}", "data.num_eval=4", "data.eval_start=8"])
        train, h = load_splits(cfg.data)
        assert [ex.id for ex in train] == [ex.id for ex in generate(12)[:n]]
        held.append([ex.id for ex in h])
    assert held[0] == held[1] == [ex.id for ex in generate(12)[8:]]
    with pytest.raises(ConfigError, match="eval_start"):
        load(None, [f"data.source={path}", "data.num_train=6", "data.eval_start=4"])
    with pytest.raises(DataError, match="held-out end"):
        load_splits(load(None, [f"data.source={path}", "data.num_train=3", "data.num_eval=5", "data.eval_start=8"]).data)


def test_eval_source_never_holds_out_a_training_question(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """data.eval_source: a held-out question whose id is one of the source's training questions is
    dropped and counted (two files of one dataset share questions), before data.num_eval is applied."""
    from gumbel_rerank.config import load
    from gumbel_rerank.data import load_splits

    source = generate(12)
    write_jsonl(source, tmp_path / "x.jsonl")
    other = [dataclasses.replace(ex, id=f"other-{i}") for i, ex in enumerate(generate(6, seed=9))]
    write_jsonl([other[0], source[1], other[1], source[9], *other[2:]], tmp_path / "held.jsonl")  # 1 trained, 9 not
    base = [f"data.source={tmp_path / 'x.jsonl'}", "data.num_train=6", f"data.eval_source={tmp_path / 'held.jsonl'}"]
    with caplog.at_level("WARNING"):
        train, held = load_splits(load(None, [*base, "data.num_eval=4"]).data)
    assert [ex.id for ex in train] == [ex.id for ex in source[:6]]
    assert [ex.id for ex in held] == ["other-0", "other-1", source[9].id, "other-2"]
    assert "skipped 1 of 8 questions whose id is a training question's" in caplog.text
    # the synthetic source too: its training questions written to a file and named as the held-out one
    synthetic_train, _ = load_splits(load(None, ["data.num_train=3", "data.num_eval=2"]).data)
    write_jsonl([*synthetic_train[1:], other[0]], tmp_path / "mixed.jsonl")
    _, held = load_splits(load(None, ["data.num_train=3", f"data.eval_source={tmp_path / 'mixed.jsonl'}"]).data)
    assert [ex.id for ex in held] == ["other-0"]


def test_extra_train_adds_questions_but_never_a_held_out_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """data.extra_train: its questions come first in the training list (the validation split stays the
    source's last ones); a question whose id is held out or already trained on is dropped and counted."""
    import dataclasses

    from gumbel_rerank.config import load
    from gumbel_rerank.data import load_splits, split_validation

    source = generate(12)
    write_jsonl(source, tmp_path / "x.jsonl")
    fresh = [dataclasses.replace(ex, id=f"extra-{i}") for i, ex in enumerate(generate(5, seed=9))]
    write_jsonl([fresh[0], source[10], fresh[1], source[2], *fresh[2:]], tmp_path / "extra.jsonl")  # 10 held out, 2 trained
    base = [f"data.source={tmp_path / 'x.jsonl'}", "data.num_train=6", "data.num_eval=4", "data.eval_start=8"]
    cfg = load(None, [*base, f"data.extra_train={tmp_path / 'extra.jsonl'}", "data.num_val=2"])
    with caplog.at_level("WARNING"):
        train, held = load_splits(cfg.data)
    assert [ex.id for ex in held] == [ex.id for ex in source[8:12]]
    assert [ex.id for ex in train] == [f"extra-{i}" for i in range(5)] + [ex.id for ex in source[:6]]
    assert "dropped 2 of 7" in caplog.text
    _, validation = split_validation(train, cfg.data.num_val)
    assert [ex.id for ex in validation] == [ex.id for ex in source[4:6]]
    assert load_splits(load(None, base).data)[0] == source[:6]  # unset: as before
    write_jsonl([fresh[0], fresh[0]], tmp_path / "twice.jsonl")
    with pytest.raises(DataError, match="repeat"):
        load_splits(load(None, [*base, f"data.extra_train={tmp_path / 'twice.jsonl'}"]).data)
    with pytest.raises(DataError, match="does not exist"):
        load_splits(load(None, [*base, f"data.extra_train={tmp_path / 'nope.jsonl'}"]).data)


def test_shuffle_splits_a_fixed_permutation_of_the_file(tmp_path: Path) -> None:
    """data.shuffle: the same seed gives the same split on every load (and in every learning-curve size);
    training and held-out questions never overlap; another seed gives another order."""
    from gumbel_rerank.config import load
    from gumbel_rerank.data import load_splits

    path = tmp_path / "x.jsonl"
    write_jsonl(generate(20), path)

    def split(n: int, seed: int) -> tuple[list[str], list[str]]:
        overrides = [f"data.num_train={n}", "data.num_eval=6", "data.eval_start=12", "data.shuffle=true", f"data.seed={seed}"]
        cfg = load(None, [f"data.source={path}", *overrides])
        train, held = load_splits(cfg.data)
        return [ex.id for ex in train], [ex.id for ex in held]

    train, held = split(12, 0)
    assert split(12, 0) == (train, held)
    assert not set(train) & set(held)
    assert sorted(train + held) != train + held  # not the file order
    small_train, small_held = split(4, 0)
    assert small_train == train[:4] and small_held == held  # a learning curve: a prefix of the same permutation
    assert split(12, 1) != (train, held)
    unshuffled = load_splits(load(None, [f"data.source={path}", "data.num_train=12", "data.num_eval=6"]).data)[0]
    assert [ex.id for ex in unshuffled] == [ex.id for ex in generate(20)[:12]]  # shuffle off (the default): file order


def test_hotpot_official_record_sentence_facts_become_doc_gold() -> None:
    record = {
        "_id": "h1",
        "question": "Which city is the capital of the country of Foo?",
        "answer": "Bar",
        "supporting_facts": [["Foo", 0], ["Baz", 1]],
        "context": [
            ["Foo", ["Foo is a country.", " Its capital is Baz."]],
            ["Baz", ["Baz ", "was renamed Bar."]],
            ["Qux", ["Qux is elsewhere."]],
        ],
    }
    ex = parse_record(record, "f:1")
    assert [d.is_gold for d in ex.docs] == [True, True, False]
    assert [d.is_bridge for d in ex.docs] == [True, False, False]
    assert ex.docs[1].text == "Baz was renamed Bar."


def test_ircot_record() -> None:
    record = {
        "question_id": "q",
        "question_text": "Who?",
        "answers_objects": [{"spans": ["Ann Lee"]}],
        "contexts": [
            {"title": "A", "paragraph_text": "Ann Lee sang.", "is_supporting": True},
            {"title": "B", "paragraph_text": "Nobody.", "is_supporting": False},
        ],
    }
    ex = parse_record(record, "f:1")
    assert ex.answers == ("Ann Lee",) and ex.docs[0].has_answer and not ex.docs[1].is_gold


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "a", "question": "q", "answers": ["x"]}, "missing field"),
        (
            {"id": "a", "question": "q", "answers": ["x"], "docs": [{"id": "1", "text": "t"}, {"id": "1", "text": "u"}]},
            "duplicate doc ids",
        ),
        ({"id": "a", "question": "q", "answers": ["x"], "docs": []}, "has no docs"),
        ({"id": "a", "question": " ", "answers": ["x"], "docs": [{"id": "1", "text": "t"}]}, "empty question"),
        ({"something": 1}, "unknown record format"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_records_say_where_and_how_to_fix(record: object, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        parse_record(record, "data.jsonl:7")
    assert "data.jsonl:7" in str(info.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "id",
        "question",
        "answers",
        "docs",
        "context",
        "supporting_facts",
        "_id",
        "answer",
        "question_text",
        "contexts",
        "answers_objects",
        "question_id",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=6))
def test_fuzzed_records_raise_only_data_errors(record: dict[str, object]) -> None:
    with contextlib.suppress(DataError):
        parse_record(record, "fuzz:1")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_files_raise_only_data_errors(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        f.write(text)
    with contextlib.suppress(DataError):
        list(read_examples(f.name))


def test_real_hotpotqa_files_load_when_present() -> None:
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "hotpotqa"
    if not root.exists():
        pytest.skip("../shared/data is not on this machine")
    ircot = list(read_examples(root / "hotpot_dev_distractor_500_ircot.jsonl"))
    assert len(ircot) == 500 and all(sum(d.is_gold for d in ex.docs) == 2 for ex in ircot)
    assert sum(len(ex.docs) == 10 for ex in ircot) == 489
    train = list(read_examples(root / "hotpot_train_distractor_100.json"))
    assert len(train) == 100
    assert json.dumps(train[0].to_json())


def test_a_broken_json_array_and_json_lines_opening_with_an_array_are_refused_at_the_right_line(tmp_path: Path) -> None:
    good = {"id": "q", "question": "Q?", "answers": ["A"], "docs": [{"id": "d0", "text": "x"}]}
    pretty = tmp_path / "a.json"  # a JSON array with junk after it: the junk's line
    pretty.write_text(json.dumps([good], indent=1) + "\n]\n")
    junk_line = len(json.dumps([good], indent=1).splitlines()) + 1
    with pytest.raises(DataError, match=rf"a\.json:{junk_line}: not valid JSON \(Extra data\)"):
        list(read_examples(pretty))
    lines = tmp_path / "b.jsonl"  # JSON Lines whose first record is wrapped in an array: line 1, not line 2
    lines.write_text(json.dumps([good]) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(DataError, match=r"b\.jsonl:1: expected a JSON object, got list"):
        list(read_examples(lines))
