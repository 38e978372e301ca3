"""Diverse verifier tree search (DVTS), as huggingface/search-and-learn defines it (``src/sal/search/
diverse_verifier_tree_search.py``; Beeching, Tunstall and Rush, "Scaling test-time compute with open models", 2024).

The budget ``candidates`` (N) is split into N / ``beam_width`` (M) independent subtrees. Each round every subtree
that is still open samples M candidate steps from its current node, one PRM call scores all of them, and each
subtree keeps only its best candidate (largest aggregated path score, the first on a tie, as ``np.argmax``): a
greedy descent per subtree, so subtrees never share a node. A subtree closes when its kept step is final (or empty).
The answer is the best kept path over the subtrees (each subtree's kept step beats its siblings, so this is
search-and-learn's argmax over every subtree's last candidates), a finished path before an unfinished one.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field, model_validator

from service.events import StrategyEvent
from service.orchestrator.strategies.base import (
    ScoredParams,
    SearchContext,
    SearchOutcome,
    StepExpander,
    fallback_answer,
    field_error,
    rank,
    score_nodes,
)
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import Aggregation, Node, SearchTree, aggregate

DEFAULT_BUDGET = 4
DEFAULT_SUBTREE_WIDTH = 2


class DvtsParams(ScoredParams):
    """DVTS's fields: the budget N, the candidates per subtree step M (N / M subtrees) and the aggregation."""

    candidates: int = Field(DEFAULT_BUDGET, ge=1, le=64)
    """The budget N: candidate steps per round over all subtrees (candidates / beam_width subtrees)."""
    beam_width: int = Field(DEFAULT_SUBTREE_WIDTH, ge=1, le=16)
    """Candidates per subtree and step (search-and-learn's M): candidates / beam_width subtrees are searched."""
    aggregation: Aggregation = "last"
    """How a path's step scores make its score (search-and-learn's default: last)."""

    @model_validator(mode="after")
    def _budget_splits(self) -> DvtsParams:
        if self.candidates % self.beam_width:
            raise field_error("beam_width", f"must divide candidates ({self.candidates}) into whole subtrees")
        return self

    @property
    def subtrees(self) -> int:
        return self.candidates // self.beam_width


class SubtreesEvent(StrategyEvent):
    """After a round: the node each subtree keeps (by subtree, ``null`` before its first step)."""

    type: Literal["subtrees"] = "subtrees"
    heads: list[int | None]


def pick(children: list[Node], how: Aggregation) -> Node:
    """A subtree's kept candidate: the largest aggregated path score, the first on a tie."""
    scores = [aggregate(child.path_scores or [], how) for child in children]
    return children[scores.index(max(scores))]


async def search(expander: StepExpander, tree: SearchTree, context: SearchContext, params: DvtsParams) -> SearchOutcome:
    heads: list[Node] = [tree.root] * params.subtrees
    open_subtrees = set(range(params.subtrees))
    for _ in range(context.max_steps):
        active = sorted(open_subtrees)
        if not active:
            break
        proposals = await asyncio.gather(
            *(expander.propose(heads[s].steps(), params.beam_width, temperature=context.temperature) for s in active)
        )
        children = {
            s: [tree.add(heads[s], c.text, judge=False) for c in candidates]
            for s, candidates in zip(active, proposals, strict=True)
        }
        await score_nodes(expander, tree, [child for s in active for child in children[s]])
        for s in active:
            heads[s] = pick(children[s], params.aggregation)
            if heads[s].final or not heads[s].text:
                open_subtrees.discard(s)
        tree.select(heads, best=rank(heads, params.aggregation)[0])
        tree.emit(SubtreesEvent(heads=[h.id if h is not tree.root else None for h in heads]))
    best = tree.best = rank(heads, params.aggregation)[0]
    if best.final:
        return SearchOutcome(best, context.answer_of(best.text), final=True)
    return await fallback_answer(expander, best, context)


STRATEGY = register(
    Strategy(
        name="dvts",
        summary="diverse verifier tree search (search-and-learn): N/M independent subtrees, each greedy by the PRM",
        params=DvtsParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates (candidates / beam_width subtrees x beam_width)",
    )
)
