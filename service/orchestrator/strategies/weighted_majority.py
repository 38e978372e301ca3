"""PRM-weighted vote: each answer gets the sum of its paths' aggregated scores (Uesato et al., 2022)."""

from __future__ import annotations

from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.strategies.voting import VoteParams, vote
from service.orchestrator.tree import SearchTree


class WeightedMajorityParams(VoteParams):
    """A weighted vote's fields (ties go to the best-scored path)."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: WeightedMajorityParams
) -> SearchOutcome:
    return await vote(expander, tree, context, params, weighted=True)


STRATEGY = register(
    Strategy(
        name="weighted_majority",
        summary="N whole paths, each answer weighted by its paths' aggregated PRM scores; optionally adaptive",
        params=WeightedMajorityParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
        path_level=True,
    )
)
