"""Inference paradigms of AtomThink as search strategies over a ``StepExpander``.

Every strategy keeps ``tree.best`` up to date, so a deadline can return the best path found so far.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from atomthink.protocol import Candidate, PromptKind
from atomthink.steps import extract_answer, invalid_reason
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
        node = tree.add(node, line)
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
            reason = invalid_reason(candidate.text, node.previous_text())
            chosen = tree.add(node, candidate.text, invalid=reason)
            if reason is None:
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


async def beam(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """SlowThink beam search: keep the ``beam_width`` best of all children at each depth (across beams).

    Ranking uses the aggregated PRM score of each child's path; the search stops when a kept path is final.
    Greedy search is this with ``beam_width == 1``.
    """
    beams = [tree.root]
    for _ in range(config.max_steps):
        proposals = await asyncio.gather(
            *(expander.propose(b.steps(), config.candidates, temperature=config.temperature) for b in beams)
        )
        children = [
            tree.add(parent, c.text, invalid=invalid_reason(c.text, parent.previous_text()))
            for parent, candidates in zip(beams, proposals, strict=True)
            for c in candidates
        ]
        contenders = [c for c in children if c.invalid is None] or children
        await _score_nodes(expander, contenders)
        ranked = sorted(contenders, key=lambda n: aggregate(n.path_scores or [], config.aggregation), reverse=True)
        beams = ranked[: config.beam_width]
        tree.best = beams[0]
        finals = [b for b in beams if b.final]
        if finals:
            return SearchOutcome(finals[0], _answer_of(finals[0].text, config), final=True)
    return await _fallback_answer(expander, beams[0], config)


async def _rollouts(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> list[Node]:
    """Sample ``candidates`` whole paths in lockstep: all open paths advance one step per round."""
    first = await expander.propose([], config.candidates, temperature=config.temperature)
    leaves = [tree.add(tree.root, c.text) for c in first]
    tree.best = next((leaf for leaf in leaves if leaf.final), leaves[0])
    for _ in range(config.max_steps - 1):
        open_leaves = [i for i, leaf in enumerate(leaves) if not leaf.final]
        if not open_leaves:
            break
        proposals = await asyncio.gather(
            *(expander.propose(leaves[i].steps(), 1, temperature=config.temperature) for i in open_leaves)
        )
        for i, [candidate] in zip(open_leaves, proposals, strict=True):
            leaves[i] = tree.add(leaves[i], candidate.text)
        tree.best = next((leaf for leaf in leaves if leaf.final), tree.best)
    await _score_nodes(expander, leaves)
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
    """Vote over N sampled paths, one vote per path or the path's aggregated PRM score; ties go to the best path."""
    ranked = _rank(await _rollouts(expander, tree, config), config)
    finished = [leaf for leaf in ranked if leaf.final]
    if not finished:
        tree.best = ranked[0]
        return await _fallback_answer(expander, ranked[0], config)
    answers = [_answer_of(leaf.text, config) for leaf in finished]
    weights = [aggregate(leaf.path_scores or [], config.aggregation) if weighted else 1.0 for leaf in finished]
    totals = tally(answers, weights)
    top = max(totals.values())
    # ``finished`` is ranked by score, so the first path whose answer has the top total wins ties.
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
    """Majority vote over N sampled paths; ties go to the answer whose best path scores highest."""
    return await _vote(expander, tree, config, weighted=False)


async def weighted_majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """PRM-weighted vote: each answer gets the sum of its paths' aggregated scores (Uesato et al., 2022)."""
    return await _vote(expander, tree, config, weighted=True)
