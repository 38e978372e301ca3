"""Inference paradigms of AtomThink as search strategies over a ``StepExpander``.

Every strategy keeps ``tree.best`` up to date, so a deadline can return the best path found so far.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from atomthink.protocol import Candidate, PromptKind
from atomthink.steps import extract_answer
from service.orchestrator.tree import Aggregation, Node, SearchTree, aggregate, rank_key


class StepExpander(Protocol):
    """What a strategy needs: sample continuations of a state, and score paths."""

    async def propose(
        self, steps: Sequence[str], n: int, *, kind: PromptKind = "step", temperature: float | None = None
    ) -> list[Candidate]: ...

    async def score(self, paths: Sequence[Sequence[str]]) -> list[list[float]]: ...


@dataclass(frozen=True)
class SearchConfig:
    """Per-request knobs of the search (validated at the API edge)."""

    max_steps: int = 20
    temperature: float = 0.7
    candidates: int = 3
    beam_width: int = 2
    aggregation: Aggregation = "last"
    max_retries: int = 5
    retry_temperature_step: float = 0.1
    choices: tuple[str, ...] = ()
    beam_start: Literal["root", "beams"] = "root"
    """Beam: expand one root, or ``beam_width`` empty rollouts as the official SlowThink does."""
    keep_invalid: bool = False
    """Beam: rank the candidates the step rules reject (official) instead of dropping them."""
    temperature_ramp: float = 0.0
    """Beam: temperature added per candidate of one beam (official v2: 0.5), capped at ``ramp_cap``."""
    ramp_cap: float = 1.0
    max_samples: int | None = None
    """Beam: no new depth starts once this many candidates were drawn."""
    tie_break: Literal["first", "prm"] = "first"
    """Majority: a tie goes to the answer sampled first (OpenR, no PRM call) or to the best-scored path."""


@dataclass(frozen=True)
class SearchOutcome:
    """The chosen path and its answer; ``final`` is False when the answer came from a fallback prompt."""

    leaf: Node
    answer: str | None
    final: bool
    votes: dict[str, int] | None = None
    vote_weights: dict[str, float] | None = None


def _answer_of(text: str, config: SearchConfig) -> str:
    return extract_answer(text, config.choices or None)


async def _fallback_answer(expander: StepExpander, leaf: Node, config: SearchConfig) -> SearchOutcome:
    """No final step within the budget: ask once for a direct answer after the steps so far."""
    [candidate] = await expander.propose(leaf.steps(), 1, kind="final", temperature=config.temperature)
    return SearchOutcome(leaf, _answer_of(candidate.text, config) or None, final=False)


async def one_shot(expander: StepExpander, tree: SearchTree, config: SearchConfig, kind: PromptKind) -> SearchOutcome:
    """``direct`` and ``cot``: one generation; a CoT answer is split into its lines as steps."""
    [candidate] = await expander.propose([], 1, kind=kind, temperature=config.temperature)
    node = tree.root
    lines = [line.strip() for line in candidate.text.splitlines() if line.strip()] if kind == "cot" else []
    for line in lines or [candidate.text.strip()]:
        node = tree.add(node, line, judge=False)
    tree.best = node
    return SearchOutcome(node, _answer_of(candidate.text, config) or None, final=node.final or kind == "direct")


async def quick(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """QuickThink: one sampled step at a time; invalid steps are resampled a bounded number of times, hotter."""
    node = tree.root
    for _ in range(config.max_steps):
        chosen: Node | None = None
        for attempt in range(config.max_retries + 1):
            temperature = min(2.0, config.temperature + attempt * config.retry_temperature_step)
            [candidate] = await expander.propose(node.steps(), 1, temperature=temperature)
            chosen = tree.add(node, candidate.text)
            if chosen.invalid is None:
                break
        assert chosen is not None
        chosen.invalid = None  # the last resample is kept even when invalid: the step budget bounds the loop
        node = tree.best = chosen
        if node.final:
            return SearchOutcome(node, _answer_of(node.text, config), final=True)
    return await _fallback_answer(expander, node, config)


async def _score_nodes(expander: StepExpander, nodes: Sequence[Node]) -> None:
    """One PRM call for every path ending at ``nodes``."""
    scores = await expander.score([node.steps() for node in nodes])
    for node, path_scores in zip(nodes, scores, strict=True):
        node.path_scores = path_scores


def ramp_temperatures(config: SearchConfig, n: int) -> list[float]:
    """Per-candidate temperatures of one beam: the official v2 loop adds the ramp after each candidate and
    clamps at the cap (``temperature += 0.5; if temperature > 1.0: temperature = 1.0``)."""
    temperatures, temperature = [], config.temperature
    for _ in range(n):
        temperatures.append(temperature)
        temperature += config.temperature_ramp
        if temperature > config.ramp_cap:
            temperature = config.ramp_cap
    return temperatures


async def _propose_beam(expander: StepExpander, parent: Node, config: SearchConfig) -> list[Candidate]:
    """The candidates of one beam: one call, or one call per temperature when the temperature ramps."""
    if config.temperature_ramp == 0:
        return await expander.propose(parent.steps(), config.candidates, temperature=config.temperature)
    calls = [expander.propose(parent.steps(), 1, temperature=t) for t in ramp_temperatures(config, config.candidates)]
    return [candidate for [candidate] in await asyncio.gather(*calls)]


async def beam(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """SlowThink beam search: keep the ``beam_width`` best of all children at each depth (across beams).

    Ranking uses the aggregated PRM score of each child's path; the search stops when a kept path is final.
    Greedy search is this with ``beam_width == 1``. With ``beam_start="beams"``, ``keep_invalid``, the temperature
    ramp and ``max_samples`` it is the official SlowThink (v1 ``evaluation.py`` ``slow_thinking``, v2
    ``atomthink_slow.py``): ``beam_width`` empty rollouts at the start, every non-empty candidate ranked (an invalid
    one is never final), the first final among the kept beams ends the search.
    """
    beams = [tree.root] * (config.beam_width if config.beam_start == "beams" else 1)
    samples = 0
    for _ in range(config.max_steps):
        if config.max_samples is not None and samples >= config.max_samples:
            break
        proposals = await asyncio.gather(*(_propose_beam(expander, b, config) for b in beams))
        samples += sum(len(p) for p in proposals)
        children = [tree.add(parent, c.text) for parent, cands in zip(beams, proposals, strict=True) for c in cands]
        if config.keep_invalid:
            contenders = [c for c in children if c.text]
            for child in contenders:
                child.invalid = None  # judged (never final when invalid) but not rejected
            if not contenders:  # official: no non-empty candidate ends the search
                break
        else:
            contenders = [c for c in children if c.invalid is None] or children
        await _score_nodes(expander, contenders)
        tree.scored(contenders)
        # sorted() is stable, as heapq.nlargest is: equal scores keep sampling order.
        ranked = sorted(contenders, key=lambda n: aggregate(n.path_scores or [], config.aggregation), reverse=True)
        beams = ranked[: config.beam_width]
        tree.select(beams)
        finals = [b for b in beams if b.final]
        if finals:
            return SearchOutcome(finals[0], _answer_of(finals[0].text, config), final=True)
    return await _fallback_answer(expander, tree.best or tree.root, config)


async def _rollouts(
    expander: StepExpander, tree: SearchTree, config: SearchConfig, *, score: bool = True
) -> list[Node]:
    """Sample ``candidates`` whole paths in lockstep: all open paths advance one step per round; then one PRM call
    scores every path (unless ``score`` is False)."""
    first = await expander.propose([], config.candidates, temperature=config.temperature)
    leaves = [tree.add(tree.root, c.text, judge=False) for c in first]
    tree.select(leaves, best=next((leaf for leaf in leaves if leaf.final), leaves[0]))
    for _ in range(config.max_steps - 1):
        open_leaves = [i for i, leaf in enumerate(leaves) if not leaf.final]
        if not open_leaves:
            break
        proposals = await asyncio.gather(
            *(expander.propose(leaves[i].steps(), 1, temperature=config.temperature) for i in open_leaves)
        )
        for i, [candidate] in zip(open_leaves, proposals, strict=True):
            leaves[i] = tree.add(leaves[i], candidate.text, judge=False)
        tree.select(leaves, best=next((leaf for leaf in leaves if leaf.final), tree.best))
    if score:
        await _score_nodes(expander, leaves)
        tree.scored(leaves)
    return leaves


def _rank(leaves: Sequence[Node], config: SearchConfig) -> list[Node]:
    """Finished paths first, then by aggregated score (stable: earlier samples win ties)."""
    return sorted(leaves, key=lambda n: rank_key(n.final, n.path_scores or [], config.aggregation), reverse=True)


async def best_of_n(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """Path-level best-of-N: sample N atomic paths, score every step, return the best aggregated path."""
    ranked = _rank(await _rollouts(expander, tree, config), config)
    best = tree.best = ranked[0]
    if best.final:
        return SearchOutcome(best, _answer_of(best.text, config), final=True)
    return await _fallback_answer(expander, best, config)


def tally(answers: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Total weight per answer (a weight of 1 per path is a plain vote count)."""
    totals: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        totals[answer] = totals.get(answer, 0.0) + weight
    return totals


async def _vote(expander: StepExpander, tree: SearchTree, config: SearchConfig, *, weighted: bool) -> SearchOutcome:
    """Vote over N sampled paths, one vote per path or the path's aggregated PRM score.

    A plain vote calls no PRM and gives a tie to the answer sampled first (OpenR's ``max(counts, key=counts.get)``),
    unless ``tie_break="prm"``; otherwise ties go to the best-scored path.
    """
    scored = weighted or config.tie_break == "prm"
    leaves = await _rollouts(expander, tree, config, score=scored)
    # Unscored: finished paths first, in sampling order (sorted() is stable).
    ranked = _rank(leaves, config) if scored else sorted(leaves, key=lambda n: n.final, reverse=True)
    finished = [leaf for leaf in ranked if leaf.final]
    if not finished:
        tree.best = ranked[0]
        return await _fallback_answer(expander, ranked[0], config)
    answers = [_answer_of(leaf.text, config) for leaf in finished]
    weights = [aggregate(leaf.path_scores or [], config.aggregation) if weighted else 1.0 for leaf in finished]
    totals = tally(answers, weights)
    top = max(totals.values())
    # ``finished`` is ranked by score (or in sampling order), so its first path with a top answer wins ties.
    index = next(i for i, answer in enumerate(answers) if totals[answer] == top)
    tree.best = finished[index]
    counts = Counter(answers)
    return SearchOutcome(
        finished[index],
        answers[index],
        final=True,
        votes=dict(counts),
        vote_weights={a: round(w, 6) for a, w in totals.items()} if weighted else None,
    )


async def majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """Majority vote over N sampled paths, without PRM calls; ties go to the answer sampled first."""
    return await _vote(expander, tree, config, weighted=False)


async def weighted_majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """PRM-weighted vote: each answer gets the sum of its paths' aggregated scores (Uesato et al., 2022)."""
    return await _vote(expander, tree, config, weighted=True)
