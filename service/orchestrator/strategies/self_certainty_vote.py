"""A PRM-free vote weighted by self-certainty: Borda voting as Kang et al. (arXiv 2502.18581) define it. The N
finished paths are ranked by mean self-certainty; the path of rank ``r`` (1 = most certain) gives its answer
``(N - r + 1) ** borda_power`` votes (power 0 is a plain majority vote)."""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from service.orchestrator import confidence
from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander, fallback_answer
from service.orchestrator.strategies.confident_paths import ConfidenceBook, ConfidenceParams, confident_rollouts
from service.orchestrator.strategies.paths import steps_saved
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.strategies.voting import leader_index, tally
from service.orchestrator.tree import SearchTree


class SelfCertaintyVoteParams(ConfidenceParams):
    """The self-certainty vote's fields."""

    borda_power: float = Field(0.5, ge=0, le=4)
    """Borda weight exponent p: rank r of N weighs (N - r + 1) ** p; 0 is a plain vote."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: SelfCertaintyVoteParams
) -> SearchOutcome:
    book = ConfidenceBook()
    k = params.top_logprobs or context.top_logprobs
    leaves, _ = await confident_rollouts(expander, tree, context, book, params.candidates, k)
    saved = steps_saved(leaves, set(), params.candidates)
    finished = [leaf for leaf in leaves if leaf.final]
    if not finished:
        tree.best = max(leaves, key=book.self_certainty)
        outcome = await fallback_answer(expander, tree.best, context)
        return SearchOutcome(outcome.leaf, outcome.answer, final=False, paths=len(leaves), steps_saved=saved)
    certainties = [book.self_certainty(leaf) for leaf in finished]
    weights = confidence.borda_weights(certainties, params.borda_power)
    order = sorted(range(len(finished)), key=lambda i: (-certainties[i], i))  # ballots: most certain first
    answers = [context.answer_of(finished[i].text) for i in order]
    ordered_weights = [weights[i] for i in order]
    index = leader_index(answers, ordered_weights)
    leaf = tree.best = finished[order[index]]
    return SearchOutcome(
        leaf,
        answers[index],
        final=True,
        votes=dict(Counter(answers)),
        vote_weights={a: round(w, 6) for a, w in tally(answers, ordered_weights).items()},
        paths=len(leaves),
        steps_saved=saved,
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
