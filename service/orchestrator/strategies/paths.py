"""Whole paths sampled in lockstep, shared by the path-level strategies (best-of-N and the votes)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import model_validator

from service.orchestrator.strategies.base import (
    ScoredParams,
    SearchContext,
    StepExpander,
    cot_steps,
    field_error,
    score_nodes,
)
from service.orchestrator.tree import Aggregation, Node, SearchTree, aggregate

PathSampling = Literal["steps", "cot"]
ScoredSteps = Literal["all", "last"]


class PathParams(ScoredParams):
    """Fields of the strategies that sample whole paths and compare them (best-of-N and the votes)."""

    path_sampling: PathSampling = "steps"
    """How each path is sampled: steps (one policy call per atomic step, all paths in lockstep, AtomThink's
    QuickThink per path) or cot (one CoT generation per path, all N in one policy call, split into its lines as
    atomic steps; the PRM scores them as any steps)."""
    score_steps: ScoredSteps = "all"
    """Which steps of a path the PRM scores, where it is called: all (every step's score in the response) or last
    (the final step's only, all that aggregation last ranks by: fewer PRM tokens; the other steps' scores are null)."""

    @model_validator(mode="after")
    def _last_step_needs_last(self) -> PathParams:
        if self.score_steps == "last" and self.aggregation != "last":
            raise field_error("score_steps", "last needs aggregation: last (the others read every step's score)")
        return self

    @property
    def last_step_only(self) -> bool:
        """The PRM scores each path's last step only (``score_steps: last``)."""
        return self.score_steps == "last"


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
    sampling: PathSampling = "steps",
    last_only: bool = False,
) -> tuple[list[Node], set[int]]:
    """Sample ``n`` whole paths in lockstep: all open paths advance one step per round (with ``sampling="cot"``, one
    policy call samples the ``n`` paths whole, ``cot_rollouts``); then one PRM call scores every path not yet scored to
    its end (unless ``score`` is False; with ``last_only``, at its last step only).

    With a ``prune_fraction``, after every ``prune_interval`` rounds one PRM call scores the open paths and
    ``prune_choice`` stops the lowest-scored of them (speculative rejection, Sun et al., 2024): they keep their
    partial scores and rank after every finished path. Returns the leaves and the indices of the pruned.
    """
    pruned: set[int] = set()
    if sampling == "cot":
        leaves = await cot_rollouts(expander, tree, context, n)
    else:
        leaves = await _stepwise(expander, tree, context, n, pruned, prune_fraction, prune_interval, aggregation)
    if score:
        unscored = [leaf for leaf in leaves if len(leaf.path_scores or []) != leaf.depth]
        if unscored:
            await score_nodes(expander, tree, unscored, last_only=last_only)
    return leaves, pruned


async def cot_rollouts(expander: StepExpander, tree: SearchTree, context: SearchContext, n: int) -> list[Node]:
    """``n`` paths from one policy call on the cot prompt: each generation's lines become its atomic steps, up to the
    first final step and at most ``max_steps`` of them (a generation with no line is one empty, unfinished step)."""
    candidates = await expander.propose([], n, kind="cot", temperature=context.temperature)
    leaves = []
    for candidate in candidates:
        node = tree.root
        for line in cot_steps(candidate.text)[: context.max_steps] or [""]:
            node = tree.add(node, line, judge=False)
            if node.final:
                break
        leaves.append(node)
    mark_best(tree, leaves)
    return leaves


async def _stepwise(
    expander: StepExpander,
    tree: SearchTree,
    context: SearchContext,
    n: int,
    pruned: set[int],
    prune_fraction: float,
    prune_interval: int,
    aggregation: Aggregation,
) -> list[Node]:
    """Lockstep sampling, one step of every open path per round, pruning into ``pruned`` as ``rollouts`` says."""
    first = await expander.propose([], n, temperature=context.temperature)
    leaves = [tree.add(tree.root, c.text, judge=False) for c in first]
    mark_best(tree, leaves)
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
    return leaves


def steps_saved(leaves: Sequence[Node], pruned: set[int], ceiling: int) -> float:
    """Estimated steps not generated against ``ceiling`` whole paths: each path never sampled would have been as
    long as the mean path that ran to its end, and each pruned path would have reached that length."""
    full = [leaf.depth for i, leaf in enumerate(leaves) if i not in pruned]
    if not full:
        return 0.0
    mean = sum(full) / len(full)
    cut = sum(max(0.0, mean - leaves[i].depth) for i in pruned)
    return max(0, ceiling - len(leaves)) * mean + cut
