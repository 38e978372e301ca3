"""DeepConf offline (Fu et al., "Deep Think with Confidence", arXiv 2508.15260): N whole paths, no PRM call; the
most confident ``eta`` percent of the finished paths vote, each with its confidence as weight.

A path's confidence comes from its tokens' top-k log-probabilities (``confident_paths``): by default its lowest
step confidence (DeepConf's lowest group confidence with one atomic step as the window; ``docs/strategies.md``).
"""

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


class DeepConfParams(ConfidenceParams):
    """DeepConf offline's fields."""

    eta: float = Field(90.0, gt=0, le=100)
    """Percent of the finished paths kept for the vote, the most confident first (DeepConf-high 90, -low 10)."""
    measure: confidence.TraceMeasure = "lowest"
    """A path's confidence: its lowest step confidence, the mean of its lowest 10% steps (bottom10), its last
    step's (tail) or the mean over all its tokens (mean)."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: DeepConfParams
) -> SearchOutcome:
    paths = await sample_confident_paths(expander, tree, context, params)
    finished = paths.finished
    if not finished:
        best = max(paths.leaves, key=lambda leaf: paths.book.trace(leaf, params.measure))
        return await unfinished_outcome(expander, tree, context, best, paths)
    confidences = [paths.book.trace(leaf, params.measure) for leaf in finished]
    kept = confidence.keep_top(confidences, params.eta)
    weights = [confidences[i] for i in kept]
    leaf, answer, votes, totals = ranked_vote([finished[i] for i in kept], weights, weights, context)
    tree.best = leaf
    return SearchOutcome(
        leaf, answer, final=True, votes=votes, vote_weights=totals, paths=len(paths.leaves), steps_saved=paths.saved
    )


STRATEGY = register(
    Strategy(
        name="deepconf",
        summary="DeepConf offline: N paths, the most confident eta% vote weighted by token confidence; no PRM",
        params=DeepConfParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
        uses_prm=False,
        path_level=True,
    )
)
