"""Math-Shepherd rollout labelling on a scripted policy (an algorithm test: which prefixes are rescued)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from research.training.rollouts import label_paths

RIGHT = "To sum up, the final answer is: 5"
WRONG = "To sum up, the final answer is: 7"


class ScriptedPolicy:
    """Completes a history with the right answer unless it already holds a step containing ``bad``."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str], temperature: float) -> list[str]:
        self.prompts.extend(prompts)
        return [WRONG if "bad" in p else RIGHT for p in prompts]


def test_first_unrescued_step_and_all_after_it_are_negative() -> None:
    problems: list[dict[str, Any]] = [{"question": "q?", "choices": None, "answer": "5"}]
    images = [Image.new("RGB", (4, 4))]
    paths = [
        (0, ["good one", "good two", RIGHT]),  # right answer: all +, no rollouts
        (0, ["good one", "bad two", "good three", WRONG]),  # rescued after step 1, not after step 2
        (0, ["bad one", WRONG]),
        (0, ["good one", WRONG]),  # only the final step is wrong
    ]
    policy = ScriptedPolicy()
    labels, n_rollouts = label_paths(policy, problems, images, paths, 2, 0.7, 12, progress=False)  # type: ignore[arg-type]
    assert labels == [
        ["+", "+", "+"],
        ["+", "-", "-", "-"],
        ["-", "-"],
        ["+", "-"],
    ]
    # rollouts: path 2 at depths 1 and 2, path 3 at depth 1, path 4 at depth 1 (2 each); none for the right path
    assert n_rollouts == 8
    assert not any("good two" in p for p in policy.prompts)
