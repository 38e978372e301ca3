"""Synthetic visual-math data engine: seeded problems rendered with Pillow, SFT / PRM / eval records."""

from research.data.engine import (
    CAPABILITIES,
    FAMILIES,
    Problem,
    Step,
    corrupt,
    generate_dataset,
    make_problem,
    recompute_answer,
)

__all__ = [
    "CAPABILITIES",
    "FAMILIES",
    "Problem",
    "Step",
    "corrupt",
    "generate_dataset",
    "make_problem",
    "recompute_answer",
]
