"""DeepConf offline (Fu et al., "Deep Think with Confidence", arXiv 2508.15260): N whole paths, no PRM call; the
most confident ``eta`` percent of the finished paths vote, each with its confidence as weight.

A path's confidence comes from its tokens' top-k log-probabilities (``confident_paths``): by default its lowest
step confidence (DeepConf's lowest group confidence with one atomic step as the window; ``docs/strategies.md``).
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from service.orchestrator import confidence
from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander, fallback_answer
from service.orchestrator.strategies.confident_paths import ConfidenceBook, ConfidenceParams, confident_rollouts
from service.orchestrator.strategies.paths import steps_saved
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.strategies.voting import leader_index, tally
from service.orchestrator.tree import Node, SearchTree


class DeepConfParams(ConfidenceParams):
    """DeepConf offline's fields."""

    eta: float = Field(90.0, gt=0, le=100)
    """Percent of the finished paths kept for the vote, the most confident first (DeepConf-high 90, -low 10)."""
    measure: confidence.TraceMeasure = "lowest"
    """A path's confidence: its lowest step confidence, the mean of its lowest 10% steps (bottom10), its last
    step's (tail) or the mean over all its tokens (mean)."""


def confidence_vote(
    finished: list[Node], confidences: list[float], context: SearchContext
) -> tuple[Node, str, dict[str, int], dict[str, float]]:
    """A confidence-weighted vote: each path weighs its confidence; ballots go most confident first, so the winning
    answer's most confident path is the one returned."""
    order = sorted(range(len(finished)), key=lambda i: (-confidences[i], i))
    answers = [context.answer_of(finished[i].text) for i in order]
    weights = [confidences[i] for i in order]
    index = leader_index(answers, weights)
    totals = {a: round(w, 6) for a, w in tally(answers, weights).items()}
    return finished[order[index]], answers[index], dict(Counter(answers)), totals


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: DeepConfParams
) -> SearchOutcome:
    book = ConfidenceBook()
    k = params.top_logprobs or context.top_logprobs
    leaves, _ = await confident_rollouts(expander, tree, context, book, params.candidates, k)
    saved = steps_saved(leaves, set(), params.candidates)
    finished = [leaf for leaf in leaves if leaf.final]
    if not finished:
        tree.best = max(leaves, key=lambda leaf: book.trace(leaf, params.measure))
        outcome = await fallback_answer(expander, tree.best, context)
        return SearchOutcome(outcome.leaf, outcome.answer, final=False, paths=len(leaves), steps_saved=saved)
    confidences = [book.trace(leaf, params.measure) for leaf in finished]
    kept = confidence.keep_top(confidences, params.eta)
    leaf, answer, votes, weights = confidence_vote([finished[i] for i in kept], [confidences[i] for i in kept], context)
    tree.best = leaf
    return SearchOutcome(
        leaf, answer, final=True, votes=votes, vote_weights=weights, paths=len(leaves), steps_saved=saved
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
