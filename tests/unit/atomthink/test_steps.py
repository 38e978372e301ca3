"""Final-answer detection, answer extraction and AtomThink's step validity rules."""

from __future__ import annotations

import pytest

from atomthink.steps import extract_answer, invalid_reason, is_final


@pytest.mark.parametrize(
    "text",
    [
        "To sum up, the final answer is: 12",
        "the FINAL ANSWER: (B)",
        "Final answer is 3.5.",
        "The answer is 7",
    ],
)
def test_final_steps(text: str) -> None:
    assert is_final(text)


@pytest.mark.parametrize("text", ["Let x be the side length.", "Step 2: 3 + 4 = 7", "answer pending"])
def test_non_final_steps(text: str) -> None:
    assert not is_final(text)


@pytest.mark.parametrize(
    ("text", "choices", "expected"),
    [
        ("To sum up, the final answer is: 12.", None, "12"),
        ("To sum up, the final answer is: $\\boxed{3/4}$", None, "3/4"),
        ("The answer is (B)", ["3", "4", "5"], "B"),
        ("To sum up, the final answer is: 5", ["3", "4", "5"], "C"),
        ("To sum up, the final answer is: C. 5", ["3", "4", "5"], "C"),
        ("42", None, "42"),
    ],
)
def test_extract_answer(text: str, choices: list[str] | None, expected: str) -> None:
    assert extract_answer(text, choices) == expected


@pytest.mark.parametrize(
    ("step", "previous", "reason"),
    [
        ("", None, "empty"),
        ("   ", None, "empty"),
        ("Step 1: a. Step 2: b. Step 3: c.", None, "several steps in one"),
        ("A is 3. A is 3. A is 3.", None, "repeats itself"),
        ("The side is 4 cm.", "The side is 4 cm.", "near copy of the previous step"),
        ("word " * 501, None, "too long"),
    ],
)
def test_invalid_steps(step: str, previous: str | None, reason: str) -> None:
    assert invalid_reason(step, previous) == reason


def test_valid_step() -> None:
    assert invalid_reason("The area is 3 x 4 = 12.", "The sides are 3 and 4.") is None
