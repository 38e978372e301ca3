"""QuickThink's official stop: a step still invalid after its resamples ends the reasoning (v1 ``quick_thinking``
and v2 ``atomthink_quick.py`` ``break`` out of the loop, then ``fail_try`` answers), on a scripted policy."""

from __future__ import annotations

from atomthink.prompts import ATOMTHINK_V2, TINY
from atomthink.steps import get_step_rules
from service.orchestrator.strategies import quick
from service.orchestrator.strategies.base import SearchContext
from service.orchestrator.strategies.quick import QuickParams
from service.orchestrator.tree import SearchTree
from tests.unit.service.scripted import ScriptedExpander

BAD = "Step 2: Step Step Step."  # more than two "Step": invalid under the v2 rules
SCRIPT = {(): ["Step 1: the bar is 5."], ("Step 1: the bar is 5.",): [BAD], ("Step 1: the bar is 5.", BAD): ["x"]}
V2 = get_step_rules("atomthink-v2")


async def test_official_presets_stop_reasoning_on_a_step_that_stays_invalid() -> None:
    assert ATOMTHINK_V2.search.quick_stop_on_invalid and not TINY.search.quick_stop_on_invalid
    expander = ScriptedExpander(SCRIPT)
    tree = SearchTree(rules=V2)
    context = SearchContext(max_retries=2, preset=ATOMTHINK_V2.search)
    outcome = await quick.search(expander, tree, context, QuickParams())
    kinds = [(call[0], call[2]) for call in expander.calls]
    # one valid step, the bad step three times (1 + 2 retries), then the fallback prompt after the valid step
    assert kinds == [((), "step")] + [(("Step 1: the bar is 5.",), "step")] * 3 + [
        (("Step 1: the bar is 5.",), "final")
    ]
    assert not outcome.final and outcome.leaf.steps() == ["Step 1: the bar is 5."]
    assert [n.invalid is not None for n in tree.nodes] == [False, True, True, True], "rejected steps stay visible"


async def test_the_option_overrides_the_preset_either_way() -> None:
    kept = await quick.search(
        ScriptedExpander(SCRIPT),
        SearchTree(rules=V2),
        SearchContext(max_retries=2, max_steps=3, preset=ATOMTHINK_V2.search),
        QuickParams(stop_on_invalid=False),
    )
    assert kept.leaf.steps()[:2] == ["Step 1: the bar is 5.", BAD], "the last resample is kept and the path goes on"
    stopped = await quick.search(
        ScriptedExpander(SCRIPT),
        SearchTree(rules=V2),
        SearchContext(max_retries=1, preset=TINY.search),
        QuickParams(stop_on_invalid=True),
    )
    assert stopped.leaf.steps() == ["Step 1: the bar is 5."] and not stopped.final
