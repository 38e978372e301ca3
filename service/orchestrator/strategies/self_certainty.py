"""Self-certainty best-of-N (Kang et al., "Scalable Best-of-N Selection for Large Language Models via
Self-Certainty", arXiv 2502.18581): N whole paths, the one whose tokens are on average most self-certain wins; no
PRM call. Self-certainty per token is the KL divergence of the uniform distribution from the policy's, over the
top-k tokens the policy reports (``service.orchestrator.confidence``)."""

from __future__ import annotations

from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander
from service.orchestrator.strategies.confident_paths import (
    ConfidenceParams,
    sample_confident_paths,
    unfinished_outcome,
)
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import SearchTree


class SelfCertaintyParams(ConfidenceParams):
    """Self-certainty best-of-N's fields: N (``candidates``) and the top-k log-probabilities per token."""


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: SelfCertaintyParams
) -> SearchOutcome:
    paths = await sample_confident_paths(expander, tree, context, params)
    book = paths.book
    # finished paths first, then the most self-certain (stable: the earlier sample wins a tie)
    best = sorted(paths.leaves, key=lambda leaf: (leaf.final, book.self_certainty(leaf)), reverse=True)[0]
    if not best.final:
        return await unfinished_outcome(expander, tree, context, best, paths)
    tree.best = best
    answer = context.answer_of(best.text)
    return SearchOutcome(best, answer, final=True, paths=len(paths.leaves), steps_saved=paths.saved)


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
