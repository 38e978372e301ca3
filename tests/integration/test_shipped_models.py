"""The shipped checkpoints load through the serving code and solve held-out problems (seed 20261125) above a floor."""

from __future__ import annotations

import io

import pytest

from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR, Settings
from atomthink_serve.embedded import embedded_runtime
from research.data import make_problem
from research.data.engine import Problem
from service.schemas import SolveParams

pytestmark = pytest.mark.integration

HELD_OUT_SEED = 20261125
SAMPLE = 24


def _png(problem_index: int) -> tuple[Problem, bytes]:
    problem = make_problem(HELD_OUT_SEED, problem_index)
    buffer = io.BytesIO()
    problem.draw().save(buffer, format="PNG")
    return problem, buffer.getvalue()


async def test_shipped_models_read_and_solve_in_quick_mode() -> None:
    settings = Settings(policy_model=str(DEFAULT_POLICY_DIR), prm_model=str(DEFAULT_PRM_DIR), torch_threads=1)
    readings_right = solved = 0
    async with embedded_runtime(settings) as runtime:
        for index in range(SAMPLE):
            problem, image = _png(index)
            params = SolveParams(question=problem.question, choices=problem.choices, mode="quick", seed=index,
                                 temperature=0.0, max_steps=12)  # fmt: skip
            response = await runtime.solve(params, image)
            gold_first = problem.steps[0].text
            readings_right += bool(response.steps) and response.steps[0].text == gold_first
            solved += response.answer == problem.answer
    # Floors under the measured figures (greedy steps after the gold prefix and greedy QuickThink are right on all of
    # the first 200 held-out problems with plain transformers): a checkpoint that does not read the image, or a
    # serving path that feeds it a prompt other than the one it was trained on, falls below them.
    print(f"shipped models, {SAMPLE} held-out problems: first step right {readings_right}, solved {solved}")
    assert readings_right >= SAMPLE - 3, f"first step (reading) right in only {readings_right}/{SAMPLE}"
    assert solved >= SAMPLE - 4, f"only {solved}/{SAMPLE} held-out problems solved in greedy quick mode"


async def test_adaptive_vote_with_the_shipped_models_stops_early_and_counts_the_saving() -> None:
    """At the serving temperature the shipped policy's first paths agree: an adaptive vote with a ceiling of 8 stops
    after its first wave on most problems, answers as the fixed vote of 8 does, and says what it saved."""
    from prometheus_client import REGISTRY

    def saved() -> float:
        labels = {"mode": "slow", "strategy": "majority"}
        return REGISTRY.get_sample_value("atomthink_saved_paths_total", labels) or 0.0

    settings = Settings(policy_model=str(DEFAULT_POLICY_DIR), prm_model=str(DEFAULT_PRM_DIR), torch_threads=1)
    paths = tokens = fixed_tokens = agree = 0
    before = saved()
    async with embedded_runtime(settings) as runtime:
        for index in range(6):
            problem, image = _png(index)
            base = {"question": problem.question, "choices": problem.choices, "mode": "slow", "strategy": "majority",
                    "candidates": 8, "seed": index, "temperature": 0.7, "max_steps": 12}  # fmt: skip
            adaptive = await runtime.solve(SolveParams(**base, adaptive=True), image)
            fixed = await runtime.solve(SolveParams(**base), image)
            assert adaptive.stats.paths is not None and adaptive.stats.paths_saved == 8 - adaptive.stats.paths
            paths += adaptive.stats.paths
            tokens += adaptive.stats.generated_tokens
            fixed_tokens += fixed.stats.generated_tokens
            agree += adaptive.answer == fixed.answer
            if adaptive.stats.paths_saved:
                assert adaptive.stats.tokens_saved and adaptive.stats.stop_reason in ("safe", "certain")
    print(f"adaptive vote, ceiling 8, 6 problems: {paths} paths, {tokens} tokens (fixed 8: {fixed_tokens})")
    assert paths <= 6 * 6, "most votes stop after their first wave of 4"
    assert tokens < 0.75 * fixed_tokens and agree >= 5
    assert saved() - before == 6 * 8 - paths


CHECKABLE = ("slip", "wrong_op", "skip", "operand")  # every engine corruption but a misread value


def test_shipped_prm_ranks_the_reference_path_above_checkable_errors() -> None:
    """Through the serving PRM backend: the reference solution's worst step scores above the worst step of a path
    with one checkable error (the engine's corruptions of the same held-out problem)."""
    import random

    from atomthink.prompts import format_question
    from research.data import corrupt
    from workers.backends.base import ScoreRequest
    from workers.backends.hf_prm import TransformersPrm

    prm = TransformersPrm(str(DEFAULT_PRM_DIR))
    rng = random.Random(0)
    wins = pairs = 0
    for index in range(40):
        problem = make_problem(HELD_OUT_SEED, index)
        wrong = [out[0] for kind in CHECKABLE if (out := corrupt(problem, kind, rng)) is not None]
        paths = [[s.text for s in problem.steps]] + [[s.text for s in steps] for steps in wrong]
        [scores] = prm.score([ScoreRequest(format_question(problem.question, problem.choices), paths)])
        reference, *corrupted = (min(s) for s in scores)
        wins += sum(reference > c for c in corrupted)
        pairs += len(corrupted)
    print(f"shipped PRM: reference path ranked first in {wins}/{pairs} pairs")
    assert wins >= 0.7 * pairs, f"reference path ranked above a checkable error in only {wins}/{pairs} pairs"
