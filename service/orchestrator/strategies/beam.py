"""SlowThink beam search: keep the ``beam_width`` best of all children at each depth (across beams), ranked by the
aggregated PRM score of each child's path; stop when a kept path is final."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from atomthink.protocol import Candidate
from service.orchestrator.strategies.base import (
    ScoredParams,
    SearchContext,
    SearchOutcome,
    StepExpander,
    fallback_answer,
    score_nodes,
)
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.tree import Aggregation, Node, SearchTree, aggregate

DEFAULT_BEAM_WIDTH = 2


class BeamParams(ScoredParams):
    """Beam search's fields; the official SlowThink's knobs default to the prompt preset's values."""

    beam_width: int = Field(DEFAULT_BEAM_WIDTH, ge=1, le=16)
    """Beams kept per depth."""
    aggregation: Aggregation = "last"
    """How a path's step scores make its score: min (worst action), last, mean or prod."""
    beam_start: Literal["root", "beams"] | None = None
    """First depth from one root, or from beam_width empty rollouts (official); unset: the prompt preset's."""
    keep_invalid: bool | None = None
    """Rank candidates the step rules reject (official) instead of dropping them; unset: the prompt preset's."""
    temperature_ramp: float | None = Field(None, ge=0, le=2)
    """Temperature added per candidate of one beam, capped at 1.0 (official v2: 0.5); unset: the prompt preset's."""
    max_samples: int | None = Field(None, ge=1, le=10_000)
    """No new depth starts after this many sampled candidates (official v1: 200, v2: 299); unset: the preset's."""


def ramp_temperatures(temperature: float, ramp: float, cap: float, n: int) -> list[float]:
    """Per-candidate temperatures of one beam: the official v2 loop adds the ramp after each candidate and
    clamps at the cap (``temperature += 0.5; if temperature > 1.0: temperature = 1.0``)."""
    temperatures = []
    for _ in range(n):
        temperatures.append(temperature)
        temperature += ramp
        if temperature > cap:
            temperature = cap
    return temperatures


async def search(expander: StepExpander, tree: SearchTree, context: SearchContext, params: BeamParams) -> SearchOutcome:
    """Greedy search is this with ``beam_width == 1``. With ``beam_start="beams"``, ``keep_invalid``, the temperature
    ramp and ``max_samples`` it is the official SlowThink (v1 ``evaluation.py`` ``slow_thinking``, v2
    ``atomthink_slow.py``): ``beam_width`` empty rollouts at the start, every non-empty candidate ranked (an invalid
    one is never final), the first final among the kept beams ends the search.
    """
    preset = context.preset
    beam_start = params.beam_start if params.beam_start is not None else preset.beam_start
    keep_invalid = params.keep_invalid if params.keep_invalid is not None else preset.keep_invalid
    ramp = params.temperature_ramp if params.temperature_ramp is not None else preset.temperature_ramp
    max_samples = params.max_samples if params.max_samples is not None else preset.max_samples

    async def propose(parent: Node) -> list[Candidate]:
        """The candidates of one beam: one call, or one call per temperature when the temperature ramps."""
        if ramp == 0:
            return await expander.propose(parent.steps(), params.candidates, temperature=context.temperature)
        temperatures = ramp_temperatures(context.temperature, ramp, preset.ramp_cap, params.candidates)
        calls = [expander.propose(parent.steps(), 1, temperature=t) for t in temperatures]
        return [candidate for [candidate] in await asyncio.gather(*calls)]

    beams = [tree.root] * (params.beam_width if beam_start == "beams" else 1)
    samples = 0
    for _ in range(context.max_steps):
        if max_samples is not None and samples >= max_samples:
            break
        proposals = await asyncio.gather(*(propose(b) for b in beams))
        samples += sum(len(p) for p in proposals)
        children = [tree.add(parent, c.text) for parent, cands in zip(beams, proposals, strict=True) for c in cands]
        if keep_invalid:
            contenders = [c for c in children if c.text]
            for child in contenders:
                child.invalid = None  # judged (never final when invalid) but not rejected
            if not contenders:  # official: no non-empty candidate ends the search
                break
        else:
            contenders = [c for c in children if c.invalid is None] or children
        await score_nodes(expander, tree, contenders)
        # sorted() is stable, as heapq.nlargest is: equal scores keep sampling order.
        ranked = sorted(contenders, key=lambda n: aggregate(n.path_scores or [], params.aggregation), reverse=True)
        beams = ranked[: params.beam_width]
        tree.select(beams)
        finals = [b for b in beams if b.final]
        if finals:
            return SearchOutcome(finals[0], context.answer_of(finals[0].text), final=True)
    return await fallback_answer(expander, tree.best or tree.root, context)


STRATEGY = register(
    Strategy(
        name="beam",
        summary="PRM-guided beam search: the beam_width best of all candidates at each depth, across beams",
        params=BeamParams,
        search=search,
        cost=lambda params: params.candidates * params.beam_width,
        cost_doc="candidates x beam_width",
    )
)
