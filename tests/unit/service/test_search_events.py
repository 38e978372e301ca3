"""Search events on a scripted tree: what the sink receives from the strategies, and the accepted-step rule."""

from __future__ import annotations

from service.api.openai_routes import accepted_path
from service.events import ExpansionEvent, ScoringEvent, SelectionEvent
from service.orchestrator.tree import SearchTree
from tests.unit.service import flat_config as strategies
from tests.unit.service.flat_config import SearchConfig
from tests.unit.service.test_strategies import FINAL, ScriptedExpander

Event = ExpansionEvent | ScoringEvent | SelectionEvent


async def test_beam_emits_expansions_scores_and_kept_beams() -> None:
    script = {(): ["a1", "b1", "c1"], ("a1",): [FINAL + "5", "a3"], ("b1",): ["b2", "b3"]}
    scores = {"a1": 0.9, "b1": 0.8, "c1": 0.1, FINAL + "5": 0.99, "a3": 0.2, "b2": 0.5, "b3": 0.4}
    events: list[Event] = []
    outcome = await strategies.beam(
        ScriptedExpander(script, scores), SearchTree(sink=events.append), SearchConfig(candidates=2, beam_width=2)
    )
    assert outcome.answer == "5"
    kinds = [event.type for event in events]
    assert kinds == ["expansion"] * 2 + ["scoring", "selection"] + ["expansion"] * 4 + ["scoring", "selection"]
    first = [node for e in events[:2] if isinstance(e, ExpansionEvent) for node in e.nodes]
    assert [(n.id, n.parent, n.text, n.depth) for n in first] == [(1, None, "a1", 1), (2, None, "b1", 1)]
    assert events[2] == ScoringEvent(scores=[{"id": 1, "score": 0.9}, {"id": 2, "score": 0.8}])
    assert events[3] == SelectionEvent(kept=[1, 2], best_path=[1])
    assert events[-1] == SelectionEvent(kept=[3, 5], best_path=[1, 3])


async def test_quick_reports_rejected_resamples_and_each_chosen_step() -> None:
    script = {(): ["", "x = 1"], ("x = 1",): [FINAL + "1"]}
    events: list[Event] = []
    await strategies.quick(ScriptedExpander(script), SearchTree(sink=events.append), SearchConfig(max_steps=3))
    expansions = [e.nodes[0] for e in events if isinstance(e, ExpansionEvent)]
    assert [(n.text, n.invalid is not None) for n in expansions] == [("", True), ("x = 1", False), (FINAL + "1", False)]
    selections = [e for e in events if isinstance(e, SelectionEvent)]
    assert [s.best_path for s in selections] == [[2], [2, 3]]
    assert not any(isinstance(e, ScoringEvent) for e in events), "QuickThink never calls the PRM"


async def test_rollouts_keep_every_path_alive_until_the_pick() -> None:
    script = {(): ["a", "b"], ("a",): [FINAL + "1"], ("b",): [FINAL + "2"]}
    scores = {"a": 0.9, "b": 0.2, FINAL + "1": 0.3, FINAL + "2": 0.8}
    events: list[Event] = []
    outcome = await strategies.best_of_n(
        ScriptedExpander(script, scores), SearchTree(sink=events.append), SearchConfig(candidates=2, aggregation="last")
    )
    selections = [e for e in events if isinstance(e, SelectionEvent)]
    assert [s.kept for s in selections] == [[1, 2], [3, 4], [4]]
    assert outcome.answer == "2" and selections[-1].best_path == [2, 4]


def test_accepted_steps_are_the_common_prefix_of_the_kept_paths() -> None:
    parents: dict[int, int | None] = {1: None, 2: None, 3: 1, 4: 1, 5: 3}
    assert accepted_path([3, 4], parents) == [1]
    assert accepted_path([5], parents) == [1, 3, 5]
    assert accepted_path([3, 2], parents) == []
    assert accepted_path([], parents) == []
