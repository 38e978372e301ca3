"""Whole paths sampled with the policy's token log-probabilities, shared by the PRM-free confidence strategies
(DeepConf offline and online, self-certainty best-of-N and vote).

Every step's candidate carries its tokens' top-k log-probabilities (``Candidate.top_logprobs``, asked for with
``logprobs=k``); ``ConfidenceBook`` keeps, per node, the step's DeepConf group confidence (the mean token confidence
over the step: the service's window is one atomic step) and its summed self-certainty, and reads a path's measures
from them (``service.orchestrator.confidence`` holds the arithmetic).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from atomthink.errors import JobFailed
from atomthink.protocol import Candidate
from service.events import StrategyEvent
from service.orchestrator import confidence
from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StrategyParams,
    fallback_answer,
)
from service.orchestrator.strategies.paths import mark_best, steps_saved
from service.orchestrator.tree import Node, SearchTree

DEFAULT_PATHS = 8


class ConfidenceParams(StrategyParams):
    """Fields of every confidence strategy: the paths and how many top log-probabilities each token reports."""

    candidates: int = Field(DEFAULT_PATHS, ge=1, le=64)
    """Whole paths sampled (N)."""
    top_logprobs: int | None = Field(None, ge=1, le=20)
    """Top log-probabilities per generated token that the confidence is computed from (DeepConf's k); unset: the
    server's ATOMTHINK_TOP_LOGPROBS (20)."""

    @property
    def candidates_per_call(self) -> int:
        return self.candidates

    def logprobs_of(self, context: SearchContext) -> int:
        """Top log-probabilities per token to ask for: this request's, else the server's."""
        return self.top_logprobs or context.top_logprobs


@dataclass(frozen=True)
class StepConfidence:
    """What one step's tokens say: its token count, DeepConf group confidence and summed self-certainty."""

    tokens: int
    group: float
    token_confidence_sum: float
    certainty_sum: float


def step_confidence(candidate: Candidate) -> StepConfidence:
    """The confidences of one generated step, from its token log-probabilities (a typed failure without them)."""
    if candidate.top_logprobs is None or candidate.token_logprobs is None:
        raise JobFailed("the policy returned no token log-probabilities (a confidence strategy needs them)")
    per_token = [
        confidence.token_confidence(top, sampled)
        for top, sampled in zip(candidate.top_logprobs, candidate.token_logprobs, strict=True)
    ]
    certainties = [confidence.token_self_certainty(top) for top in candidate.top_logprobs if top]
    group = sum(per_token) / len(per_token) if per_token else 0.0
    return StepConfidence(len(per_token), group, sum(per_token), sum(certainties))


class NodeConfidence(BaseModel):
    id: int
    confidence: float = Field(description="DeepConf group confidence of the step (mean token confidence).")
    self_certainty: float = Field(description="Mean self-certainty of the step's tokens (top-k estimate).")


class ConfidenceEvent(StrategyEvent):
    """Confidences of the steps just generated, and the paths a confidence rule stopped (DeepConf online)."""

    type: Literal["confidence"] = "confidence"
    nodes: list[NodeConfidence] = Field(default_factory=list)
    stopped: list[int] = Field(default_factory=list, description="Nodes whose path stopped here (low confidence).")
    threshold: float | None = Field(None, description="DeepConf online's stop threshold, once the warm-up set it.")


@dataclass
class ConfidenceBook:
    """Per node (by id) the confidences of its step."""

    steps: dict[int, StepConfidence] = field(default_factory=dict)

    def add(self, node: Node, candidate: Candidate) -> StepConfidence:
        step = self.steps[node.id] = step_confidence(candidate)
        return step

    def groups(self, leaf: Node) -> list[float]:
        """Group confidences of the path's steps that have tokens."""
        return [self.steps[n.id].group for n in leaf.path() if n.id in self.steps and self.steps[n.id].tokens]

    def trace(self, leaf: Node, measure: confidence.TraceMeasure) -> float:
        """DeepConf's confidence of the path ending at ``leaf``."""
        steps = [self.steps[n.id] for n in leaf.path() if n.id in self.steps]
        tokens = sum(s.tokens for s in steps)
        if measure == "mean":
            return sum(s.token_confidence_sum for s in steps) / tokens if tokens else 0.0
        groups = self.groups(leaf)
        return confidence.trace_confidence(groups, measure) if groups else 0.0

    def self_certainty(self, leaf: Node) -> float:
        """Mean self-certainty over every token of the path (Kang et al.'s answer-level score)."""
        steps = [self.steps[n.id] for n in leaf.path() if n.id in self.steps]
        tokens = sum(s.tokens for s in steps)
        return sum(s.certainty_sum for s in steps) / tokens if tokens else 0.0

    def event(
        self, nodes: Sequence[Node], stopped: Sequence[Node] = (), threshold: float | None = None
    ) -> ConfidenceEvent:
        return ConfidenceEvent(
            nodes=[
                NodeConfidence(
                    id=n.id,
                    confidence=round(self.steps[n.id].group, 6),
                    self_certainty=round(self.steps[n.id].certainty_sum / max(1, self.steps[n.id].tokens), 6),
                )
                for n in nodes
                if n.id in self.steps
            ],
            stopped=[n.id for n in stopped],
            threshold=threshold,
        )


StopRule = Callable[[Node], bool]
"""Whether the path ending at a node just generated stops there (DeepConf online's low-confidence stop)."""


async def confident_rollouts(
    expander: StepExpander,
    tree: SearchTree,
    context: SearchContext,
    book: ConfidenceBook,
    n: int,
    top_logprobs: int,
    *,
    stop: StopRule | None = None,
    threshold: float | None = None,
) -> tuple[list[Node], set[int]]:
    """Sample ``n`` whole paths in lockstep with token log-probabilities (one policy call for the first steps, then
    one per open path and step), recording every step's confidences in ``book``. With ``stop``, a path stops at the
    first step it flags (the step is kept in the tree, the path is marked stopped). Returns the leaves and the
    indices of the stopped paths."""
    first = await expander.propose([], n, temperature=context.temperature, logprobs=top_logprobs)
    leaves = [tree.add(tree.root, c.text, judge=False) for c in first]
    stopped: set[int] = set()
    _record(tree, book, leaves, first, range(n), stop, stopped, threshold)
    mark_best(tree, leaves, stopped)
    for _ in range(1, context.max_steps):
        open_paths = [i for i, leaf in enumerate(leaves) if not leaf.final and i not in stopped]
        if not open_paths:
            break
        proposals = await asyncio.gather(
            *(
                expander.propose(leaves[i].steps(), 1, temperature=context.temperature, logprobs=top_logprobs)
                for i in open_paths
            )
        )
        candidates = [candidate for [candidate] in proposals]
        for i, candidate in zip(open_paths, candidates, strict=True):
            leaves[i] = tree.add(leaves[i], candidate.text, judge=False)
        _record(tree, book, leaves, candidates, open_paths, stop, stopped, threshold)
        mark_best(tree, leaves, stopped)
    return leaves, stopped


def _record(
    tree: SearchTree,
    book: ConfidenceBook,
    leaves: Sequence[Node],
    candidates: Sequence[Candidate],
    indices: Sequence[int],
    stop: StopRule | None,
    stopped: set[int],
    threshold: float | None,
) -> None:
    """Book the new steps' confidences, apply the stop rule, report both."""
    new = [leaves[i] for i in indices]
    for node, candidate in zip(new, candidates, strict=True):
        book.add(node, candidate)
    halted = [i for i in indices if stop is not None and stop(leaves[i])]
    stopped.update(halted)
    tree.emit(book.event(new, [leaves[i] for i in halted], threshold))


@dataclass
class ConfidentPaths:
    """The N whole paths of an offline confidence strategy, their confidences and the steps they saved."""

    book: ConfidenceBook
    leaves: list[Node]
    saved: float

    @property
    def finished(self) -> list[Node]:
        return [leaf for leaf in self.leaves if leaf.final]


async def sample_confident_paths(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: ConfidenceParams
) -> ConfidentPaths:
    """``params.candidates`` whole paths with their token confidences (``confident_rollouts``, nothing stopped)."""
    book = ConfidenceBook()
    leaves, _ = await confident_rollouts(expander, tree, context, book, params.candidates, params.logprobs_of(context))
    return ConfidentPaths(book, leaves, steps_saved(leaves, set(), params.candidates))


async def unfinished_outcome(
    expander: StepExpander, tree: SearchTree, context: SearchContext, best: Node, paths: ConfidentPaths
) -> SearchOutcome:
    """No path finished: ``best`` is the best so far and the fallback prompt answers from it."""
    tree.best = best
    outcome = await fallback_answer(expander, best, context)
    return SearchOutcome(outcome.leaf, outcome.answer, final=False, paths=len(paths.leaves), steps_saved=paths.saved)
