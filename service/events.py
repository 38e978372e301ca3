"""Wire types of the search event stream (``/solve`` with ``stream: true``) and the sink the orchestrator feeds.

The search tree emits one event per expansion (a new node), per scoring (a PRM call's node scores) and per selection
(the nodes kept alive and the current best path). The stream then ends with the final ``SolveResponse`` or an error.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, Field


class EventNode(BaseModel):
    """A node as it was when expanded; ``parent`` is null for a first step (ids match the response's ``tree``)."""

    id: int
    parent: int | None
    text: str
    depth: int
    final: bool = Field(description="The step states a final answer.")
    invalid: str | None = Field(description="Why the step was rejected by the step rules, or null.")


class ExpansionEvent(BaseModel):
    """New nodes proposed by the policy."""

    type: Literal["expansion"] = "expansion"
    nodes: list[EventNode]


class NodeScore(BaseModel):
    id: int
    score: float = Field(description="PRM probability that this node's step is correct.")


class ScoringEvent(BaseModel):
    """PRM scores of the steps ending the scored paths (one PRM call)."""

    type: Literal["scoring"] = "scoring"
    scores: list[NodeScore]


class SelectionEvent(BaseModel):
    """The nodes the search keeps alive (every later node descends from one of them) and the current best path."""

    type: Literal["selection"] = "selection"
    kept: list[int]
    best_path: list[int] = Field(description="Node ids from the first step to the current best node.")


SearchEvent = Annotated[ExpansionEvent | ScoringEvent | SelectionEvent, Field(discriminator="type")]


class StrategyEvent(BaseModel):
    """An event of one strategy's own (a strategy module subclasses it with a ``Literal`` ``type``, e.g. particle
    weights after a resampling); streamed as an SSE event named by ``type``, as the three above are."""

    type: str


class EventSink(Protocol):
    """Where a search tree sends its events; called synchronously, so it must not block."""

    def __call__(self, event: ExpansionEvent | ScoringEvent | SelectionEvent | StrategyEvent, /) -> None: ...
