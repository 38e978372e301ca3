"""Answer extraction and matching over the MathVista and MathVerse fixture files: the documented cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.eval.datasets import EvalItem, load_items
from research.eval.matching import match_answer, option_letter, prediction_of, to_number

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "eval"


@pytest.fixture(scope="module")
def vista() -> dict[str, EvalItem]:
    return {item.id: item for item in load_items(FIXTURES / "mathvista" / "testmini.json")}


@pytest.fixture(scope="module")
def verse() -> dict[str, EvalItem]:
    return {item.id: item for item in load_items(FIXTURES / "mathverse" / "testmini.json")}


# (pid, prediction, correct, method): MathVista testmini items of each answer type.
VISTA_CASES = [
    ("1", "C", True, "letter"),  # choices 135°, 140°, 145°, 150°; gold is the option text "145°"
    ("1", "(C)", True, "letter"),
    ("1", "C. 145°", True, "letter"),
    ("1", "option C", True, "letter"),
    ("1", "145°", True, "option_text"),
    ("1", "145", True, "option_text"),
    ("1", "B", False, "letter"),
    ("1", "135°", False, "option_text"),
    ("5", "No", True, "option_text"),  # Yes / No
    ("5", "B", True, "letter"),
    ("5", "Yes", False, "option_text"),
    ("2", "1000", True, "integer"),
    ("2", "1,000", True, "integer"),
    ("2", "1000.0", True, "integer"),
    ("2", "1000 g", True, "integer"),
    ("2", "999", False, "integer"),
    ("2", "1000.5", False, "integer"),
    ("3", "1.2", True, "float"),  # precision 1
    ("3", "1.23", True, "float"),
    ("3", "1.26", False, "float"),
    ("4", "0.571", True, "float"),  # precision 2
    ("4", "0.56", False, "float"),
]


@pytest.mark.parametrize(("pid", "prediction", "correct", "method"), VISTA_CASES)
def test_mathvista_cases(vista: dict[str, EvalItem], pid: str, prediction: str, correct: bool, method: str) -> None:
    verdict = match_answer(prediction, vista[pid])
    assert (verdict.correct, verdict.method) == (correct, method)


# (sample_index, prediction, correct): MathVerse testmini, multiple choice inline, a fraction and a radical.
VERSE_CASES = [
    ("1", "D", True),  # Text Dominant; options parsed out of "Choices:"
    ("1", "140°", True),
    ("1", "(D) 140°", True),
    ("1", "A", False),
    ("5", "D", True),  # Vision Only: the options are only in the image
    ("5", "d", True),
    ("5", "B", False),
    ("6", "3/2", True),  # gold \frac{3}{2}
    ("6", "1.5", True),
    ("6", "\\frac{6}{4}", True),
    ("6", "$\\dfrac{3}{2}$", True),
    ("6", "2", False),
    ("11", "\\sqrt{12}", True),  # gold 2\sqrt{3}
    ("11", "2√3", True),
    ("11", "2\\sqrt{3}", True),
    ("11", "4", False),
]


@pytest.mark.parametrize(("sample", "prediction", "correct"), VERSE_CASES)
def test_mathverse_cases(verse: dict[str, EvalItem], sample: str, prediction: str, correct: bool) -> None:
    assert match_answer(prediction, verse[sample]).correct is correct


def test_latex_goes_through_the_verifier(verse: dict[str, EvalItem]) -> None:
    assert match_answer("\\frac{6}{4}", verse["6"]).method == "verifier"
    assert match_answer("\\sqrt{12}", verse["11"]).method == "verifier"


def test_no_prediction_is_wrong(vista: dict[str, EvalItem]) -> None:
    assert match_answer(None, vista["2"]).method == "none"
    assert not match_answer("   ", vista["2"]).correct


def test_prediction_falls_back_to_the_last_step(vista: dict[str, EvalItem]) -> None:
    steps = ["The cup shows 1000 g.", "To sum up, the final answer is: 1000"]
    assert prediction_of(None, steps, vista["2"]) == "1000"
    assert prediction_of("C", [], vista["1"]) == "C"
    assert prediction_of(None, [], vista["1"]) is None


def test_option_letter_prefers_option_text_over_a_letter_lookalike() -> None:
    assert option_letter("B", ["A", "B", "C"]) == "B"  # options that are letters themselves (MathVista puzzles)
    assert option_letter("A pen costs 2", ["1", "2"]) is None
    assert to_number("6cm") == 6.0 and to_number("12%") == 12.0 and to_number("x + 1") is None
