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
    """QuickThink takes no fields of its own: its retries are the server's settings (``ATOMTHINK_QUICK_*``)."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: QuickParams
) -> SearchOutcome:
    """One step per policy call; the last resample is kept even when invalid (the step budget bounds the loop)."""
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
