"""Corrupted negatives of free-text paths: every kind changes exactly the step it names, and says so."""

from __future__ import annotations

import random

import pytest

from research.training.negatives import KINDS, corrupt_step, negatives

QUESTION = "A box holds 12 red and 5 blue balls. How many more red balls than blue ones are there?"
STEPS = ["There are 12 red balls and 5 blue balls.", "We subtract: 12 - 5 = 7", "The final answer is 7"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_makes_a_different_step_labelled_minus(kind: str) -> None:
    made = list(negatives(QUESTION, STEPS, random.Random(0), kinds=[kind]))
    assert len(made) == 1
    neg = made[0]
    k = len(neg.steps) - 1
    assert neg.kind == kind and neg.steps[:k] == STEPS[:k] and neg.steps[k] != STEPS[k]
    assert neg.labels == ["+"] * k + ["-"]


def test_the_rules_change_what_they_say() -> None:
    rng = random.Random(1)
    calc = corrupt_step("calculation", STEPS, 1, QUESTION, rng)
    assert calc is not None and calc.startswith("We subtract: 12 - 5 = ") and not calc.endswith("= 7")
    fact = corrupt_step("factual", STEPS, 0, QUESTION, rng)
    assert fact is not None and fact != STEPS[0] and ("12" not in fact or "5 blue" not in fact)
    logic = corrupt_step("logic", STEPS, 1, QUESTION, rng)
    assert logic == "We subtract: 12 + 5 = 7"
    assert corrupt_step("empty", STEPS, 2, QUESTION, rng) == ""
    assert corrupt_step("repeated", STEPS, 2, QUESTION, rng) == STEPS[1]
    assert corrupt_step("repeated", STEPS, 0, QUESTION, rng) is None  # nothing before the first step
    assert corrupt_step("factual", ["Let x be the answer."], 0, QUESTION, rng) is None
