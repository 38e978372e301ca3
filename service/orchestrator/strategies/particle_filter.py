"""Particle filtering (Puri et al., arXiv 2502.01618), as its_hub 1.2.0 serves it (``ParticleFiltering`` in
``its_hub/core/algorithms/particle_gibbs.py``: particle Gibbs with one iteration, no reference particles).

``candidates`` particles start empty. Each round every particle that has not stopped is extended by one sampled
step (particles on the same node share one policy call), the PRM scores the new steps, and each particle's
log-weight becomes the logit of its path's score (``aggregation``: ``last`` is the latest step's score, as its_hub
weights by the PRM's score of the response so far; a stopped particle keeps its last weight). Then ``candidates``
particles are drawn with replacement, with probabilities ``softmax(log_weights / weight_temperature)``,
multinomially or systematically. A particle stops at a final step or at ``max_steps``; the search ends when every
particle has stopped. The answer is the particle with the largest log-weight (``argmax``) or one drawn by weight
(``sample``). The arithmetic is ``service.orchestrator.particles``; the random draws use the request's seed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal

from pydantic import BaseModel, Field

from service.events import StrategyEvent
from service.orchestrator import particles
from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StrategyParams,
    fallback_answer,
    score_nodes,
)
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import Aggregation, Node, SearchTree, aggregate

DEFAULT_PARTICLES = 4


class ParticleFilterParams(StrategyParams):
    """Particle filtering's fields (its_hub's knobs)."""

    candidates: int = Field(DEFAULT_PARTICLES, ge=1, le=64)
    """Particles (its_hub's budget): each is extended by one step per round."""
    aggregation: Aggregation = "last"
    """How a particle's step scores make the score its weight is the logit of (last: its latest step's, its_hub's)."""
    weight_temperature: float = Field(1.0, gt=0, le=100)
    """Temperature of the resampling weights: softmax(log_weight / weight_temperature); above 1 keeps more diversity."""
    resampling: particles.ResamplingRule = "multinomial"
    """How particles are redrawn each step: multinomial (its_hub's default) or systematic."""
    selection: particles.SelectionRule = "argmax"
    """Which particle answers: the largest weight (argmax, its_hub's default) or one drawn by weight (sample)."""

    @property
    def candidates_per_call(self) -> int:
        return self.candidates


class ParticleWeight(BaseModel):
    id: int
    weight: float = Field(description="Resampling probability of the particle on this node.")


class ParticlesEvent(StrategyEvent):
    """One resampling: each particle's node and probability before the draw, and the nodes the draw kept (with
    repetition: a node drawn twice carries two particles)."""

    type: Literal["particles"] = "particles"
    step: int
    weights: list[ParticleWeight]
    drawn: list[int]


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: ParticleFilterParams
) -> SearchOutcome:
    rng = random.Random(context.seed)
    n = params.candidates
    nodes: list[Node] = [tree.root] * n
    log_weights = [0.0] * n
    stopped = [False] * n
    for step in range(1, context.max_steps + 1):
        active = [i for i in range(n) if not stopped[i]]
        if not active:
            break
        await _propagate(expander, tree, context, nodes, active)
        await score_nodes(expander, tree, [nodes[i] for i in active])
        for i in active:
            score = aggregate(nodes[i].path_scores or [], params.aggregation)
            log_weights[i] = particles.log_weight(min(1.0, max(0.0, score)))
            stopped[i] = nodes[i].final or nodes[i].depth >= context.max_steps
        probs = particles.probabilities(log_weights, params.weight_temperature)
        drawn = particles.resample(probs, n, params.resampling, rng)
        tree.emit(
            ParticlesEvent(
                step=step,
                weights=[ParticleWeight(id=node.id, weight=round(p, 6)) for node, p in zip(nodes, probs, strict=True)],
                drawn=[nodes[j].id for j in drawn],
            )
        )
        nodes = [nodes[j] for j in drawn]
        log_weights = [log_weights[j] for j in drawn]
        stopped = [stopped[j] for j in drawn]
        best = nodes[particles.select(log_weights, "argmax", rng)]
        tree.select(list(dict.fromkeys(nodes)), best=best)
    chosen = nodes[particles.select(log_weights, params.selection, rng, params.weight_temperature)]
    tree.best = chosen
    if chosen.final:
        return SearchOutcome(chosen, context.answer_of(chosen.text), final=True)
    return await fallback_answer(expander, chosen, context)


async def _propagate(
    expander: StepExpander, tree: SearchTree, context: SearchContext, nodes: list[Node], active: list[int]
) -> None:
    """Extend every active particle by one sampled step; particles on one node share one call of that many samples."""
    by_node: dict[int, list[int]] = {}
    for i in active:
        by_node.setdefault(id(nodes[i]), []).append(i)
    groups = list(by_node.values())
    proposals = await asyncio.gather(
        *(expander.propose(nodes[g[0]].steps(), len(g), temperature=context.temperature) for g in groups)
    )
    for group, candidates in zip(groups, proposals, strict=True):
        parent = nodes[group[0]]
        for i, candidate in zip(group, candidates, strict=True):
            nodes[i] = tree.add(parent, candidate.text, judge=False)


STRATEGY = register(
    Strategy(
        name="particle_filter",
        summary="particle filtering (its_hub, Puri et al.): N particles, PRM-weighted resampling at every step",
        params=ParticleFilterParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates (particles)",
    )
)
