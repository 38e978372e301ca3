"""Reading an LLM judge's step verdict tolerantly, and turning it into Math-Shepherd-style labels."""

from __future__ import annotations

import pytest

from research.training.step_judge import JudgeUnreadable, labels_from_first_error, parse_first_error, split_steps


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"first_error_step": 2}', 2),
        ('Sure! ```json\n{"first_error_step": 0}\n```', 0),
        ('{"first_error": "3"}', 3),
        ("2", 2),
        ("The first wrong step is step 1.", 1),
    ],
)
def test_readable_replies(reply: str, expected: int) -> None:
    assert parse_first_error(reply, 3) == expected


@pytest.mark.parametrize("reply", ["", "no idea", '{"first_error_step": 9}', "steps 1 and 2", '{"x": true}'])
def test_unreadable_replies_are_refused(reply: str) -> None:
    with pytest.raises(JudgeUnreadable):
        parse_first_error(reply, 3)


def test_labels_and_steps() -> None:
    assert labels_from_first_error(0, 3) == ["+", "+", "+"]
    assert labels_from_first_error(2, 3) == ["+", "-", "-"]
    # the official data engine wrote Math-psa's tag without its leading space: both spellings split alike
    assert split_steps("a \n\n\n\n\nb \n\n\n\n\n", " \n\n\n\n\n") == ["a", "b"]
    assert split_steps("a\n\n\n\n\nb\n\n\n\n\n", " \n\n\n\n\n") == ["a", "b"]
