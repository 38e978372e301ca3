"""Readers of the synthetic JSONL, MathVista testmini and MathVerse testmini fixture files."""

from __future__ import annotations

import json
from pathlib import Path

from research.eval.datasets import MATHVERSE_VERSIONS, VISION_ONLY_QUESTION, detect_format, load_items

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "eval"


def test_formats_are_detected() -> None:
    assert detect_format(FIXTURES / "synthetic" / "problems.jsonl") == "synthetic"
    assert detect_format(FIXTURES / "mathvista" / "testmini.json") == "mathvista"
    assert detect_format(FIXTURES / "mathverse" / "testmini.json") == "mathverse"


def test_mathvista_testmini() -> None:
    items = {i.id: i for i in load_items(FIXTURES / "mathvista" / "testmini.json")}
    assert set(items) == {"1", "2", "3", "4", "5"}
    assert items["1"].answer_type == "choice" and items["1"].gold_letter == "C"
    assert items["2"].answer_type == "integer" and items["2"].split == "General"
    assert items["3"].answer_type == "float" and items["3"].precision == 1 and items["3"].split == "Math"
    assert all(i.image is not None and i.image.is_file() for i in items.values())


def test_mathvista_accepts_jsonl_of_the_same_records(tmp_path: Path) -> None:
    records = json.loads((FIXTURES / "mathvista" / "testmini.json").read_text())
    path = tmp_path / "testmini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records.values()))
    items = load_items(path, image_root=FIXTURES / "mathvista", limit=2)
    assert [i.id for i in items] == ["1", "2"] and items[0].image is not None and items[0].image.is_file()


def test_mathverse_testmini() -> None:
    items = load_items(FIXTURES / "mathverse")
    assert len(items) == 15 and {i.split for i in items} == set(MATHVERSE_VERSIONS)
    first = items[0]
    assert first.choices == ("40°", "60°", "120°", "140°") and "Choices" not in first.question
    assert first.gold_letter == "D"
    vision_only = [i for i in items if i.split == "Vision Only"]
    assert all(i.question == VISION_ONLY_QUESTION for i in vision_only)
    assert vision_only[0].choices is None and vision_only[0].gold_letter == "D"
    assert {i.answer for i in items if i.answer_type == "text"} == {"\\frac{3}{2}", "2\\sqrt{3}"}
    assert all(i.image is not None and i.image.is_file() for i in items)


def test_synthetic_jsonl_keeps_capability_tags() -> None:
    items = load_items(FIXTURES / "synthetic")
    assert len(items) == 6
    assert {i.split for i in items} <= {"bars", "shapes", "prices"}
    assert all(i.steps and i.steps[-1].capability == "conclusion" for i in items)
    multiple = [i for i in items if i.choices]
    assert multiple and all(i.gold_letter == i.answer for i in multiple)
    assert all(i.answer_type == "integer" for i in items if not i.choices)
