"""DVTS on scripted trees: independent subtrees, a greedy PRM descent in each, the best kept path wins."""

from __future__ import annotations

import pytest

from service.orchestrator.strategies import dvts
from service.orchestrator.strategies.base import SearchContext
from service.orchestrator.strategies.dvts import DvtsParams, SubtreesEvent
from service.orchestrator.tree import SearchTree
from tests.unit.service.scripted import FINAL, ScriptedExpander


async def test_subtrees_never_share_a_node_and_each_descends_greedily() -> None:
    # N = 6, M = 2: three subtrees. The root hands out six distinct first steps, two per subtree.
    script = {
        (): ["a", "b", "c", "d", "e", "f"],
        ("b",): ["b1", "b2"], ("c",): ["c1", "c2"], ("f",): ["f1", FINAL + "3"],
        ("b", "b1"): [FINAL + "4", "b3"], ("c", "c1"): [FINAL + "2", "c3"],
        ("b", "b1", "b3"): [FINAL + "1", "b4"],
    }  # fmt: skip
    scores = {"a": 0.5, "b": 0.6, "c": 0.7, "d": 0.1, "e": 0.2, "f": 0.3, "b1": 0.8, "b2": 0.1, "c1": 0.7,
              "c2": 0.6, "f1": 0.2, FINAL + "3": 0.8, FINAL + "4": 0.3, "b3": 0.9, FINAL + "2": 0.6, "c3": 0.2,
              FINAL + "1": 0.95, "b4": 0.1}  # fmt: skip
    expander = ScriptedExpander(script, scores)
    sink: list[object] = []
    tree = SearchTree(sink=sink.append)
    outcome = await dvts.search(expander, tree, SearchContext(), DvtsParams(candidates=6, beam_width=2))

    # every round, each open subtree makes one call of M candidates from its own kept node
    assert [(c[0], c[1]) for c in expander.calls[:3]] == [((), 2)] * 3
    # subtree heads after round 1: the better of (a, b), (c, d), (e, f)
    heads = [e for e in sink if isinstance(e, SubtreesEvent)]
    text = {n.id: n.text for n in tree.nodes}
    assert [text[h] for h in heads[0].heads if h is not None] == ["b", "c", "f"]
    # no node is shared: each subtree's next kept node is a child of its own kept node (or it stays, closed),
    # the kept nodes are distinct at every round, and the subtrees' final paths are disjoint
    nodes = {n.id: n for n in tree.nodes}
    rounds = [[nodes[h] for h in e.heads if h is not None] for e in heads]
    for before, after in zip(rounds, rounds[1:], strict=False):
        for b, a in zip(before, after, strict=True):
            assert a is b or a.parent is b
    assert all(len(set(map(id, kept))) == len(kept) == 3 for kept in rounds)
    paths = [{n.id for n in head.path()} for head in rounds[-1]]
    assert all(not paths[i] & paths[j] for i in range(3) for j in range(i + 1, 3))
    # rounds: 3 subtrees, then 3, then 2 (f's closed on a final step), then 1 (c's closed); answer: the best head
    assert [len(call) for call in expander.score_calls] == [6, 6, 4, 2]
    assert outcome.final and outcome.answer == "1"
    assert outcome.leaf.steps() == ["b", "b1", "b3", FINAL + "1"]


async def test_final_selection_is_the_best_subtree_path_finished_first() -> None:
    script = {
        (): ["x", "y"],
        ("x",): [FINAL + "5"],
        ("y",): [FINAL + "6"],
    }
    scores = {"x": 0.4, "y": 0.9, FINAL + "5": 0.8, FINAL + "6": 0.7}
    outcome = await dvts.search(
        ScriptedExpander(script, scores), SearchTree(), SearchContext(), DvtsParams(candidates=2, beam_width=1)
    )
    assert outcome.answer == "5", "two subtrees of one candidate each: x's path ends at 0.8 (last), y's at 0.7"
    outcome_min = await dvts.search(
        ScriptedExpander(script, scores),
        SearchTree(),
        SearchContext(),
        DvtsParams(candidates=2, beam_width=1, aggregation="min"),
    )
    assert outcome_min.answer == "6"


def test_budget_must_split_into_whole_subtrees() -> None:
    with pytest.raises(ValueError, match="beam_width"):
        DvtsParams(candidates=5, beam_width=2)
    assert DvtsParams(candidates=8, beam_width=4).subtrees == 2
