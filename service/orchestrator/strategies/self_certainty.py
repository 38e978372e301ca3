"""Self-certainty best-of-N (Kang et al., "Scalable Best-of-N Selection for Large Language Models via
Self-Certainty", arXiv 2502.18581): N whole paths, the one whose tokens are on average most self-certain wins; no
PRM call. Self-certainty per token is the KL divergence of the uniform distribution from the policy's, over the
top-k tokens the policy reports (``service.orchestrator.confidence``)."""

from __future__ import annotations

from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander, fallback_answer
from service.orchestrator.strategies.confident_paths import ConfidenceBook, ConfidenceParams, confident_rollouts
from service.orchestrator.strategies.paths import steps_saved
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import SearchTree


class SelfCertaintyParams(ConfidenceParams):
    """Self-certainty best-of-N's fields: N (``candidates``) and the top-k log-probabilities per token."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: SelfCertaintyParams
) -> SearchOutcome:
    book = ConfidenceBook()
    k = params.top_logprobs or context.top_logprobs
    leaves, _ = await confident_rollouts(expander, tree, context, book, params.candidates, k)
    # finished paths first, then the most self-certain (stable: the earlier sample wins a tie)
    best = tree.best = sorted(leaves, key=lambda leaf: (leaf.final, book.self_certainty(leaf)), reverse=True)[0]
    saved = steps_saved(leaves, set(), params.candidates)
    if best.final:
        return SearchOutcome(best, context.answer_of(best.text), final=True, paths=len(leaves), steps_saved=saved)
    outcome = await fallback_answer(expander, best, context)
    return SearchOutcome(outcome.leaf, outcome.answer, final=False, paths=len(leaves), steps_saved=saved)


STRATEGY = register(
    Strategy(
        name="self_certainty",
        summary="self-certainty best-of-N (Kang et al.): the path whose tokens are most self-certain; no PRM",
        params=SelfCertaintyParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
        uses_prm=False,
        path_level=True,
    )
)
