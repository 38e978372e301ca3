"""QuickThink: one sampled atomic step at a time, no PRM; an invalid step is resampled, hotter, a bounded number of
times (``mode="quick"``)."""

from __future__ import annotations

from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StrategyParams,
    fallback_answer,
)
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import Node, SearchTree


class QuickParams(StrategyParams):
    """QuickThink's field; its retries are the server's settings (``ATOMTHINK_QUICK_*``)."""

    stop_on_invalid: bool | None = None
    """A step still invalid after its resamples ends the reasoning and the fallback prompt answers (the official
    QuickThink); false keeps the last resample and goes on; unset: the prompt preset's (on for atomthink-v1/v2)."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: QuickParams
) -> SearchOutcome:
    """One step per policy call. A step still invalid after its resamples either ends the reasoning (the fallback
    prompt answers after the steps accepted so far; the rejected step stays in the tree) or is kept (the step budget
    bounds the loop)."""
    stop_on_invalid = (
        params.stop_on_invalid if params.stop_on_invalid is not None else context.preset.quick_stop_on_invalid
    )
    node = tree.root
    for _ in range(context.max_steps):
        chosen: Node | None = None
        for attempt in range(context.max_retries + 1):
            temperature = min(2.0, context.temperature + attempt * context.retry_temperature_step)
            [candidate] = await expander.propose(node.steps(), 1, temperature=temperature)
            chosen = tree.add(node, candidate.text)
            if chosen.invalid is None:
                break
        assert chosen is not None
        if chosen.invalid is not None and stop_on_invalid:
            tree.best = node
            return await fallback_answer(expander, node, context)
        chosen.invalid = None
        node = tree.best = chosen
        if node.final:
            return SearchOutcome(node, context.answer_of(node.text), final=True)
    return await fallback_answer(expander, node, context)


STRATEGY = register(
    Strategy(
        name="quick",
        summary="QuickThink: one atomic step per policy call, no PRM; invalid steps resampled slightly hotter",
        params=QuickParams,
        search=search,
        cost=lambda params: 1,
        cost_doc="1",
        mode="quick",
        uses_prm=False,
    )
)
