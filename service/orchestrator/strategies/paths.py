"""Whole paths sampled in lockstep, shared by the path-level strategies (best-of-N and the votes)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from service.orchestrator.strategies.base import SearchContext, StepExpander, score_nodes
from service.orchestrator.tree import Aggregation, Node, SearchTree, aggregate


def mark_best(tree: SearchTree, leaves: Sequence[Node], pruned: set[int] | frozenset[int] = frozenset()) -> None:
    """Select the paths still sampled (a selection event) and the best path so far: the first to finish, else the
    first path's current step."""
    best = tree.best
    if best is None or not best.final:
        best = next((leaf for leaf in leaves if leaf.final), leaves[0])
    tree.select([leaf for i, leaf in enumerate(leaves) if i not in pruned], best=best)


def prune_choice(partial_scores: Sequence[Sequence[float]], fraction: float, how: Aggregation) -> list[int]:
    """Which open paths pruning stops: the ``floor(fraction * len)`` lowest by aggregated partial score (on a tie
    the later-sampled path goes first, as earlier samples win ties elsewhere), as indices in sampling order."""
    k = math.floor(fraction * len(partial_scores) + 1e-9)
    order = sorted(range(len(partial_scores)), key=lambda i: (aggregate(partial_scores[i], how), -i))
    return sorted(order[:k])


async def rollouts(
    expander: StepExpander,
    tree: SearchTree,
    context: SearchContext,
    n: int,
    *,
    score: bool = True,
    prune_fraction: float = 0.0,
    prune_interval: int = 2,
    aggregation: Aggregation = "min",
) -> tuple[list[Node], set[int]]:
    """Sample ``n`` whole paths in lockstep: all open paths advance one step per round; then one PRM call scores every
    path not yet scored to its end (unless ``score`` is False).

    With a ``prune_fraction``, after every ``prune_interval`` rounds one PRM call scores the open paths and
    ``prune_choice`` stops the lowest-scored of them (speculative rejection, Sun et al., 2024): they keep their
    partial scores and rank after every finished path. Returns the leaves and the indices of the pruned.
    """
    first = await expander.propose([], n, temperature=context.temperature)
    leaves = [tree.add(tree.root, c.text, judge=False) for c in first]
    mark_best(tree, leaves)
    pruned: set[int] = set()
    for done_steps in range(1, context.max_steps):
        open_leaves = [i for i, leaf in enumerate(leaves) if not leaf.final and i not in pruned]
        if not open_leaves:
            break
        if prune_fraction > 0 and done_steps % prune_interval == 0:
            await score_nodes(expander, tree, [leaves[i] for i in open_leaves])
            partial = [leaves[i].path_scores or [] for i in open_leaves]
            pruned.update(open_leaves[j] for j in prune_choice(partial, prune_fraction, aggregation))
            open_leaves = [i for i in open_leaves if i not in pruned]
        proposals = await asyncio.gather(
            *(expander.propose(leaves[i].steps(), 1, temperature=context.temperature) for i in open_leaves)
        )
        for i, [candidate] in zip(open_leaves, proposals, strict=True):
            leaves[i] = tree.add(leaves[i], candidate.text, judge=False)
        mark_best(tree, leaves, pruned)
    if score:
        unscored = [leaf for leaf in leaves if len(leaf.path_scores or []) != leaf.depth]
        if unscored:
            await score_nodes(expander, tree, unscored)
    return leaves, pruned


def steps_saved(leaves: Sequence[Node], pruned: set[int], ceiling: int) -> float:
    """Estimated steps not generated against ``ceiling`` whole paths: each path never sampled would have been as
    long as the mean path that ran to its end, and each pruned path would have reached that length."""
    full = [leaf.depth for i, leaf in enumerate(leaves) if i not in pruned]
    if not full:
        return 0.0
    mean = sum(full) / len(full)
    cut = sum(max(0.0, mean - leaves[i].depth) for i in pruned)
    return max(0, ceiling - len(leaves)) * mean + cut
