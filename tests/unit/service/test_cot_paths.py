"""Path-level strategies with ``path_sampling="cot"``: each path is one CoT generation split into atomic steps, all N
from one policy call, then scored and compared exactly as step-sampled paths (scripted policy and PRM)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.orchestrator.strategies import best_of_n, majority, weighted_majority
from service.orchestrator.strategies.base import SearchContext
from service.orchestrator.tree import SearchTree
from tests.unit.service.scripted import FINAL, ScriptedExpander

COTS = [
    f"a1\na2\n{FINAL}7\nafter the answer",  # stops at its final step: the line after it is not a step
    f"b1\n\n  b2  \n{FINAL}9",  # blank lines dropped, lines stripped
    "c1\nc2\nc3\nc4\nc5",  # no final step within max_steps = 4: cut to 4 steps, unfinished
]
SCORES = {"a1": 0.9, "a2": 0.4, FINAL + "7": 0.8, "b1": 0.6, "b2": 0.7, FINAL + "9": 0.95, "c1": 0.99, "c2": 0.99,
          "c3": 0.99, "c4": 0.99}  # fmt: skip


async def test_cot_best_of_n_samples_n_paths_in_one_call_and_scores_their_lines_as_steps() -> None:
    expander = ScriptedExpander({(): COTS}, SCORES)
    tree = SearchTree()
    params = best_of_n.BestOfNParams(candidates=3, aggregation="min", path_sampling="cot")
    outcome = await best_of_n.search(expander, tree, SearchContext(max_steps=4), params)

    assert [(c.state, c.n, c.kind) for c in expander.calls] == [((), 3, "cot")]
    assert expander.score_calls == [[["a1", "a2", FINAL + "7"], ["b1", "b2", FINAL + "9"], ["c1", "c2", "c3", "c4"]]]
    # min: a = 0.4, b = 0.6; the unfinished c (0.99) ranks after every finished path
    assert outcome.final and outcome.answer == "9"
    assert outcome.leaf.steps() == ["b1", "b2", FINAL + "9"]
    assert [s for s in outcome.leaf.path_scores or []] == [0.6, 0.7, 0.95]
    assert outcome.paths == 3
    assert len(tree.nodes) == 3 + 3 + 4


async def test_cot_majority_votes_without_a_prm_call() -> None:
    cots = [f"x\n{FINAL}3", f"y\n{FINAL}4", f"z\n{FINAL}4", "no answer"]
    expander = ScriptedExpander({(): cots})
    params = majority.MajorityParams(candidates=4, path_sampling="cot")
    outcome = await majority.search(expander, SearchTree(), SearchContext(max_steps=6), params)
    assert outcome.answer == "4" and outcome.votes == {"4": 2, "3": 1}
    assert expander.score_calls == []
    assert [(c.n, c.kind) for c in expander.calls] == [(4, "cot")]


async def test_cot_adaptive_weighted_vote_samples_each_wave_in_one_call() -> None:
    cots = [f"s\n{FINAL}5"]
    expander = ScriptedExpander({(): cots}, {"s": 0.9, FINAL + "5": 0.9})
    params = weighted_majority.WeightedMajorityParams(candidates=8, path_sampling="cot", adaptive=True)
    outcome = await weighted_majority.search(expander, SearchTree(), SearchContext(max_steps=6), params)
    # the first wave (4 agreeing paths) already makes the leader certain: one cot call of 4, one PRM call
    assert outcome.answer == "5" and outcome.stop_reason is not None and outcome.paths == 4
    assert [(c.n, c.kind) for c in expander.calls] == [(4, "cot")]
    assert len(expander.score_calls) == 1


def test_cot_paths_cannot_be_pruned() -> None:
    with pytest.raises(ValidationError, match="prune_fraction"):
        best_of_n.BestOfNParams(candidates=4, path_sampling="cot", prune_fraction=0.5)
    with pytest.raises(ValidationError, match="path_sampling"):
        best_of_n.BestOfNParams(candidates=4, path_sampling="whole")  # type: ignore[arg-type]


async def test_last_step_scoring_sends_the_earlier_steps_as_stand_ins_and_ranks_by_the_last() -> None:
    expander = ScriptedExpander({(): COTS}, SCORES)
    params = best_of_n.BestOfNParams(candidates=3, aggregation="last", path_sampling="cot", score_steps="last")
    outcome = await best_of_n.search(expander, SearchTree(), SearchContext(max_steps=4), params)
    # one PRM call; every step before the last goes as a known stand-in (a per-step PRM sends no prompt for it)
    assert expander.known_calls == [[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0, 0.0]]]
    assert outcome.answer == "9" and outcome.leaf.stand_ins == 2  # last: b's 0.95 beats a's 0.8


def test_last_step_scoring_needs_the_last_aggregation() -> None:
    with pytest.raises(ValidationError, match="score_steps"):
        best_of_n.BestOfNParams(candidates=4, aggregation="min", score_steps="last")
    with pytest.raises(ValidationError, match="score_steps"):
        weighted_majority.WeightedMajorityParams(candidates=4, aggregation="mean", score_steps="last")
