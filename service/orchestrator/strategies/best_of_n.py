"""Path-level best-of-N: sample N atomic paths, score every step, return the best aggregated path; optionally prune
the lowest-scored open paths as they go (speculative rejection)."""

from __future__ import annotations

from pydantic import Field, model_validator

from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    fallback_answer,
    field_error,
    rank,
)
from service.orchestrator.strategies.paths import PathParams, rollouts, steps_saved
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import SearchTree


class BestOfNParams(PathParams):
    """Best-of-N's fields: N (``candidates``), the aggregation that ranks the paths, and pruning."""

    prune_fraction: float = Field(0.0, ge=0, lt=1)
    """Fraction of the open paths stopped at each pruning check, lowest partial PRM score first (0: no pruning)."""
    prune_interval: int = Field(2, ge=1, le=50)
    """Steps between two pruning checks."""

    @model_validator(mode="after")
    def _whole_paths_cannot_prune(self) -> BestOfNParams:
        if self.path_sampling == "cot" and self.prune_fraction > 0:
            raise field_error("prune_fraction", "needs path_sampling: steps (a CoT path arrives whole)")
        return self


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: BestOfNParams
) -> SearchOutcome:
    leaves, pruned = await rollouts(
        expander,
        tree,
        context,
        params.candidates,
        prune_fraction=params.prune_fraction,
        prune_interval=params.prune_interval,
        aggregation=params.aggregation,
        sampling=params.path_sampling,
        last_only=params.last_step_only,
    )
    best = tree.best = rank(leaves, params.aggregation)[0]
    answer: str | None
    if best.final:
        leaf, answer = best, context.answer_of(best.text)
    else:
        fallback = await fallback_answer(expander, best, context)
        leaf, answer = fallback.leaf, fallback.answer
    saved = steps_saved(leaves, pruned, params.candidates)
    return SearchOutcome(leaf, answer, best.final, paths=len(leaves), pruned=len(pruned), steps_saved=saved)


STRATEGY = register(
    Strategy(
        name="best_of_n",
        summary="N whole paths, every step PRM-scored, the best aggregated path wins; optional pruning",
        params=BestOfNParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
        path_level=True,
    )
)
