"""The evaluation's AUROC figures on hand-made scores: ranks, ties, and the arithmetic-only comparison."""

from __future__ import annotations

import pytest

from research.training.evaluate import arithmetic_auroc, auroc


def test_auroc_counts_ties_half() -> None:
    assert auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auroc([0.1, 0.9], [1, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert auroc([0.2, 0.4, 0.3], [1, 1, 0]) == 0.5


def test_arithmetic_auroc_compares_only_calculation_steps_by_their_arithmetic() -> None:
    paths = [
        ["Bar A is 3.", "3 + 4 = 7", "To sum up, the final answer is: 7"],
        ["Bar A is 3.", "3 + 4 = 8", "To sum up, the final answer is: 8"],
        ["Width w = 2.", "2 × 6 = 12", "30 - 12 = 17"],
    ]
    # the non-calculation steps carry scores that would invert the ranking if they were counted
    scores = [[0.0, 0.9, 0.0], [1.0, 0.2, 1.0], [0.0, 0.7, 0.6]]
    assert arithmetic_auroc(paths, scores) == 1.0  # right sums 0.9, 0.7 above wrong ones 0.2, 0.6
    scores[2][2] = 0.8
    assert arithmetic_auroc(paths, scores) == pytest.approx(0.75)
