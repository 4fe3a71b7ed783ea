"""`gumbel-rerank data convert`: formats detected, summaries, bad records counted with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gumbel_rerank.cli import main
from gumbel_rerank.data import read_examples
from gumbel_rerank.data.convert import load, summary

MUSIQUE = {
    "id": "m1",
    "question": "Who?",
    "answer": "Ann",
    "answer_aliases": ["Annie"],
    "answerable": True,
    "paragraphs": [
        {"idx": 0, "title": "A", "paragraph_text": "Ann sang.", "is_supporting": True},
        {"idx": 1, "title": "B", "paragraph_text": "Bob, the link.", "is_supporting": True},
        {"idx": 2, "title": "C", "paragraph_text": "Nothing.", "is_supporting": False},
    ],
}
WIKI_ROW = {
    "_1": "w1",
    "question": "Where?",
    "answer": "Cork",
    "type": "compositional",
    "context": "[['X', ['X is in Cork.']], ['Y', ['Y is X.']], ['Z', ['Zed.']]]",
    "supporting_facts": "[['X', 0], ['Y', 0]]",
}


def test_musique_jsonl_with_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.jsonl"
    dup = {"id": "s2", "question": "q", "answers": ["x"], "docs": [{"id": "1", "text": "t"}, {"id": "1", "text": "u"}]}
    lines = [json.dumps(MUSIQUE), "{broken", json.dumps(dup), json.dumps({"id": "m3", "paragraphs": []})]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "questions 1," in printed and "skipped 3" in printed and f"{path}:2" in printed
    assert "duplicate doc ids" in printed
    (ex,) = list(read_examples(out))
    assert ex.answers == ("Ann", "Annie") and [d.is_bridge for d in ex.docs] == [False, True, False]


def test_wiki_pandas_column_layout(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    columns = {k: {"0": v, "1": v} for k, v in WIKI_ROW.items()}
    columns["_1"]["1"] = "w2"
    path.write_text(json.dumps(columns))
    loaded = load(path)
    s = summary(loaded)
    assert s["questions"] == 2 and s["formats"] == {"hotpotqa/2wiki": 2}
    assert s["gold_per_question"] == 2 and s["bridge_per_question"] == 1 and s["share_with_bridge"] == 1.0
    assert [d.is_gold for d in loaded.examples[0].docs] == [True, True, False]


def test_question_only_records_need_a_pool(tmp_path: Path) -> None:
    path = tmp_path / "nq.jsonl"
    path.write_text(json.dumps({"question": "who?", "answer": ["Ann"]}) + "\n")
    s = summary(load(path))
    assert s["questions"] == 0 and s["skipped"] == 1
    assert "build a candidate pool" in s["first_errors"][0]
    assert load(path, allow_no_docs=True).examples[0].answers == ("Ann",)


def test_real_files_convert_with_expected_counts() -> None:
    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not root.exists():
        pytest.skip("../shared/data is not on this machine")
    wiki = summary(load(root / "2wikimultihopqa" / "2wiki_dev_500.pandas.json"))
    assert wiki["questions"] == 500 and wiki["docs_per_question"]["min"] == 10 == wiki["docs_per_question"]["max"]
    mus = summary(load(root / "musique" / "musique_ans_dev_200.jsonl"))
    assert mus["questions"] == 200 and mus["docs_per_question"]["mean"] == 20
    assert mus["gold_per_question"] == pytest.approx((145 * 2 + 32 * 3 + 23 * 4) / 200)  # SOURCE.md hop counts
    fullwiki = summary(load(root / "hotpotqa" / "hotpot_dev_fullwiki_500.jsonl"))
    assert fullwiki["questions"] - fullwiki["questions_missing_a_gold_doc"] == 151  # SOURCE.md: both gold for 151/500
    assert fullwiki["skipped"] == 2


def test_pools_from_a_corpus_link_gold_and_answers(tmp_path: Path, bert_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "oracle.jsonl"
    rows = [
        {
            "question": f"question {i}?",
            "answers": [f"answer{i}"],
            "ctxs": [{"title": f"T{i}", "text": f"Text {i} says answer{i}.", "isgold": True, "hasanswer": True}],
        }
        for i in range(6)
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    questions = tmp_path / "nq.jsonl"
    questions.write_text(
        "\n".join(json.dumps({"question": f"question {i}?", "answer": [f"answer{i}"]}) for i in (0, 3, 9)) + "\n"
    )
    out = tmp_path / "out.jsonl"
    args = [
        "data",
        "convert",
        str(questions),
        "--output",
        str(out),
        "--pool",
        "6",
        "--corpus",
        str(corpus),
        "--encoder",
        bert_dir,
    ]
    assert main(args) == 0
    examples = list(read_examples(out))
    assert [len(ex.docs) for ex in examples] == [6, 6, 6]  # every corpus passage is a candidate here
    assert sum(d.is_gold for d in examples[0].docs) == 1 and sum(d.is_gold for d in examples[2].docs) == 0
    gold = next(d for d in examples[1].docs if d.is_gold)
    assert gold.text == "Text 3 says answer3." and gold.has_answer
    assert "gold passage not retrieved for 0" in capsys.readouterr().out
