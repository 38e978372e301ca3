"""Majority vote over N sampled paths, without PRM calls; a tie goes to the answer sampled first (or, with
``tie_break="prm"``, to the best-scored path)."""

from __future__ import annotations

from typing import Literal

from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.strategies.voting import VoteParams, vote
from service.orchestrator.tree import SearchTree


class MajorityParams(VoteParams):
    """A plain vote's fields."""

    tie_break: Literal["first", "prm"] = "first"
    """A tie goes to the answer sampled first (no PRM call) or to the best-scored path (the PRM scores every path)."""

    @property
    def prm_ties(self) -> bool:
        return self.tie_break == "prm"


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: MajorityParams
) -> SearchOutcome:
    return await vote(expander, tree, context, params, weighted=False)


STRATEGY = register(
    Strategy(
        name="majority",
        summary="majority vote over N whole paths, no PRM call (self-consistency); optionally adaptive",
        params=MajorityParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
        uses_prm=True,  # tie_break="prm" scores every path
        path_level=True,
    )
)
