"""A PRM-free vote weighted by self-certainty: Borda voting as Kang et al. (arXiv 2502.18581) define it. The N
finished paths are ranked by mean self-certainty; the path of rank ``r`` (1 = most certain) gives its answer
``(N - r + 1) ** borda_power`` votes (power 0 is a plain majority vote)."""

from __future__ import annotations

from pydantic import Field

from service.orchestrator import confidence
from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander
from service.orchestrator.strategies.confident_paths import (
    ConfidenceParams,
    sample_confident_paths,
    unfinished_outcome,
)
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.strategies.voting import ranked_vote
from service.orchestrator.tree import SearchTree


class SelfCertaintyVoteParams(ConfidenceParams):
    """The self-certainty vote's fields."""

    borda_power: float = Field(0.5, ge=0, le=4)
    """Borda weight exponent p: rank r of N weighs (N - r + 1) ** p; 0 is a plain vote."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: SelfCertaintyVoteParams
) -> SearchOutcome:
    paths = await sample_confident_paths(expander, tree, context, params)
    finished = paths.finished
    if not finished:
        best = max(paths.leaves, key=paths.book.self_certainty)
        return await unfinished_outcome(expander, tree, context, best, paths)
    certainties = [paths.book.self_certainty(leaf) for leaf in finished]
    weights = confidence.borda_weights(certainties, params.borda_power)
    leaf, answer, votes, totals = ranked_vote(finished, certainties, weights, context)  # most certain ballots first
    tree.best = leaf
    return SearchOutcome(
        leaf, answer, final=True, votes=votes, vote_weights=totals, paths=len(paths.leaves), steps_saved=paths.saved
    )


STRATEGY = register(
    Strategy(
        name="self_certainty_vote",
        summary="Borda vote weighted by self-certainty rank (Kang et al.); no PRM",
        params=SelfCertaintyVoteParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
        uses_prm=False,
        path_level=True,
    )
)
