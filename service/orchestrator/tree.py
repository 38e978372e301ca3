"""The search tree: nodes are atomic steps; a path from the root is a partial or complete solution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from atomthink.steps import TINY_RULES, StepRules
from service.events import (
    EventNode,
    EventSink,
    ExpansionEvent,
    NodeScore,
    ScoringEvent,
    SelectionEvent,
    StrategyEvent,
)

Aggregation = Literal["min", "last", "mean", "prod"]
"""How a path's step scores make its score (the request's ``aggregation``)."""


def aggregate(scores: Sequence[float], how: Aggregation) -> float:
    """Path score from step scores: ``min`` (worst action), ``last``, ``mean`` or ``prod``."""
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "mean":
        return sum(scores) / len(scores)
    return math.prod(scores)


def rank_key(final: bool, scores: Sequence[float], how: Aggregation) -> tuple[bool, float]:
    """How path-level strategies rank paths: finished ones first, then by aggregated score."""
    return final, aggregate(scores, how)


@dataclass(eq=False)
class Node:
    """One atomic step. ``path_scores`` holds the PRM scores of every step from the root to here."""

    id: int
    parent: Node | None
    text: str
    depth: int
    final: bool = False
    invalid: str | None = None
    """Why the step was rejected (QuickThink resamples, beam drops), or None."""
    path_scores: list[float] | None = None
    stand_ins: int = 0
    """Leading entries of ``path_scores`` that are no PRM scores (a path scored at its last step only): they are
    reported as null and never aggregated (only ``last`` reads such a path)."""

    @property
    def score(self) -> float | None:
        return self.path_scores[-1] if self.path_scores else None

    def path(self) -> list[Node]:
        """Nodes from the first step to this one (the root excluded)."""
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def steps(self) -> list[str]:
        return [n.text for n in self.path()]

    def known_scores(self) -> list[float]:
        """Scores of this path's first steps already computed: those of the nearest scored ancestor."""
        node = self.parent
        while node is not None and node.path_scores is None:
            node = node.parent
        return list(node.path_scores) if node is not None and node.path_scores is not None else []

    def previous_text(self) -> str | None:
        """Text of this node as the 'previous step' of its children (None at the root)."""
        return self.text if self.parent is not None else None


class SearchTree:
    """All nodes expanded for one request, plus the best path found so far (returned on a deadline).

    With a ``sink`` it reports the search as it happens: ``add`` emits an expansion, ``scored`` a scoring, and
    setting ``best`` (or ``select``) a selection. Strategies call ``scored`` after each PRM call and ``select`` when
    they keep several nodes alive.
    """

    def __init__(self, rules: StepRules = TINY_RULES, sink: EventSink | None = None) -> None:
        self.rules = rules
        """The step rules of the policy's prompt preset: they decide which steps are final and which invalid."""
        self.root = Node(id=0, parent=None, text="", depth=0)
        self.nodes: list[Node] = []
        self.sink = sink
        self._best: Node | None = None

    def add(self, parent: Node, text: str, *, judge: bool = True) -> Node:
        """A new child of ``parent``; with ``judge``, ``invalid`` says why the step rules reject it."""
        verdict = self.rules.check(text, parent.previous_text())
        node = Node(
            id=len(self.nodes) + 1,
            parent=parent,
            text=text,
            depth=parent.depth + 1,
            final=verdict.final,
            invalid=verdict.invalid if judge else None,
        )
        self.nodes.append(node)
        if self.sink is not None:
            self.sink(ExpansionEvent(nodes=[event_node(node)]))
        return node

    def scored(self, nodes: Sequence[Node]) -> None:
        """Report the PRM scores just set on ``nodes``."""
        if self.sink is not None:
            scores = [NodeScore(id=n.id, score=n.score) for n in nodes if n.score is not None]
            self.sink(ScoringEvent(scores=scores))

    @property
    def best(self) -> Node | None:
        return self._best

    @best.setter
    def best(self, node: Node | None) -> None:
        self.select([node] if node is not None else [])

    def select(self, kept: Sequence[Node], best: Node | None = None) -> None:
        """Keep ``kept`` alive (every later node descends from one of them); ``best`` defaults to the first."""
        self._best = best if best is not None else (kept[0] if kept else None)
        if self.sink is not None:
            best_path = [n.id for n in self._best.path()] if self._best is not None else []
            self.sink(SelectionEvent(kept=[n.id for n in kept if n.parent is not None], best_path=best_path))

    def emit(self, event: StrategyEvent) -> None:
        """Report an event of the strategy's own (see ``StrategyEvent``)."""
        if self.sink is not None:
            self.sink(event)


def event_node(node: Node) -> EventNode:
    parent = node.parent.id if node.parent is not None and node.parent.parent is not None else None
    return EventNode(
        id=node.id, parent=parent, text=node.text, depth=node.depth, final=node.final, invalid=node.invalid
    )
