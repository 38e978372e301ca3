"""Greedy search: beam search that keeps one beam (``beam_width`` is 1 and cannot be set otherwise)."""

from __future__ import annotations

from pydantic import Field

from service.orchestrator.strategies import beam
from service.orchestrator.strategies.registry import Strategy, register


class GreedyParams(beam.BeamParams):
    """Beam search's fields with exactly one beam."""

    beam_width: int = Field(1, ge=1, le=1)
    """Greedy search keeps exactly one beam: omit it, or use beam."""


STRATEGY = register(
    Strategy(
        name="greedy",
        summary="beam search with one beam: the best-scored candidate at each depth",
        params=GreedyParams,
        search=beam.search,
        cost=lambda params: params.candidates,
        cost_doc="candidates",
    )
)
