"""The documented input mapping of ``research.annotate.problems``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.annotate.problems import detect_input_format, load_problems
from research.eval.matching import match_answer


def write(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sharegpt_llava_records(tmp_path: Path) -> None:
    rows = [
        {"id": "mv-1", "image": "images/a.png", "conversations": [
            {"from": "human", "value": "<image>\nFind x.\nChoices:\nA: 30°\nB: 60°"},
            {"from": "gpt", "value": "The angles sum to 90°, so x = 60°.\nThe answer is B"}]},
        {"id": "mv-2", "image": "b.png", "conversations": [
            {"from": "human", "value": "<image>\nHow many bars are there?"}, {"from": "gpt", "value": "4"}]},
        {"id": "mv-3", "conversations": [{"from": "human", "value": "What is 1/2 + 1/4?"},
                                         {"from": "gpt", "value": "3/4"}], "answer": "\\frac{3}{4}"},
    ]  # fmt: skip
    problems = load_problems(write(tmp_path / "data.jsonl", rows))
    a, b, c = problems
    assert a.item.question == "Find x." and a.item.choices == ("30°", "60°") and a.item.answer == "B"
    assert a.item.image == tmp_path / "images/a.png" and a.image_ref == "images/a.png"
    assert a.solution is not None and a.solution.startswith("The angles")
    assert match_answer("B", a.item).correct and match_answer("60°", a.item).correct
    assert b.item.answer == "4" and b.item.answer_type == "integer"
    assert c.item.image is None and match_answer("0.75", c.item).correct


def test_mathvista_and_plain_and_synthetic_records(tmp_path: Path) -> None:
    vista = {"pid": "7", "question": "What is the value?", "image": "images/7.jpg", "choices": None,
             "answer": "1.5", "answer_type": "float", "precision": 1, "question_type": "free_form",
             "metadata": {"category": "math-targeted-vqa"}}  # fmt: skip
    [p] = load_problems(write(tmp_path / "vista.jsonl", [vista]))
    assert p.item.answer_type == "float" and p.solution is None and match_answer("1.52", p.item).correct
    plain = {"id": "q1", "question": "What is 2 + 2?", "answer": "4", "solution": "2 + 2 = 4"}
    [q] = load_problems(write(tmp_path / "plain.jsonl", [plain]))
    assert q.solution == "2 + 2 = 4" and q.item.image is None
    synthetic = {"id": "s1", "image": None, "question": "Sum?", "choices": None, "answer": "5", "family": "bars",
                 "steps": [{"text": "2 + 3 = 5", "capability": "calculation"},
                           {"text": "To sum up, the final answer is: 5", "capability": "conclusion"}]}  # fmt: skip
    [s] = load_problems(write(tmp_path / "syn.jsonl", [synthetic]))
    assert s.solution == "2 + 3 = 5\nTo sum up, the final answer is: 5"


def test_unknown_layouts_and_duplicate_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell"):
        detect_input_format({"prompt": "x"})
    rows = [{"id": "a", "question": "q", "answer": "1"}] * 2
    with pytest.raises(ValueError, match="duplicate"):
        load_problems(write(tmp_path / "dup.jsonl", rows))
