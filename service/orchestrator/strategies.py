"""Inference paradigms of AtomThink as search strategies over a ``StepExpander``.

Every strategy keeps ``tree.best`` up to date, so a deadline can return the best path found so far.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
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

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        """PRM scores of every step of each path; ``known`` (per path, or empty) holds scores of its first steps
        from an earlier call, which the PRM may return instead of recomputing them."""
        ...


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
    adaptive: bool = False
    """Votes: sample paths in waves and stop as soon as ``vote_stop`` says so; ``candidates`` is the ceiling."""
    min_candidates: int = 4
    """Adaptive votes: paths in the first wave (no stop is considered before them)."""
    wave_size: int = 2
    """Adaptive votes: paths in each later wave."""
    stop_votes: int = 3
    """Adaptive votes, certainty rule: the leader needs at least this many paths ..."""
    stop_share: float = 0.75
    """... and at least this share of the votes cast (of the summed weight in a weighted vote)."""
    prune_fraction: float = 0.0
    """Best-of-N: every ``prune_interval`` rounds, stop this fraction (rounded down) of the open paths, the
    lowest-scored by their partial aggregated PRM score; 0 prunes nothing."""
    prune_interval: int = 2
    """Best-of-N: rounds (steps) between two pruning checks."""
    max_thinking_tokens: int | None = None
    """Every strategy: no policy call starts once the request has generated this many tokens (``TokenBudget``)."""


SearchStrategy = Callable[[StepExpander, SearchTree, SearchConfig], Awaitable["SearchOutcome"]]
"""What ``quick``, ``beam``, ``best_of_n``, ``majority`` and ``weighted_majority`` are."""


@dataclass(frozen=True)
class SearchOutcome:
    """The chosen path and its answer; ``final`` is False when the answer came from a fallback prompt."""

    leaf: Node
    answer: str | None
    final: bool
    votes: dict[str, int] | None = None
    vote_weights: dict[str, float] | None = None
    paths: int | None = None
    """Path-level strategies: whole paths sampled (``candidates`` is the ceiling)."""
    pruned: int = 0
    """Best-of-N: paths stopped early by pruning."""
    stop_reason: StopReason | None = None
    """Adaptive votes: why sampling stopped."""
    steps_saved: float = 0.0
    """Path-level strategies: an estimate of the steps not generated against the ceiling (``steps_saved``)."""


StopReason = Literal["safe", "certain", "ceiling"]


class ThinkingBudgetExhausted(Exception):
    """The request's ``max_thinking_tokens`` is spent: the search ends with its best path so far."""


class TokenBudget:
    """A ``StepExpander`` that counts the tokens it generates and refuses to start a policy call once ``limit`` are
    spent. A call in flight finishes, so the spend can pass the limit by at most one round of calls."""

    def __init__(self, inner: StepExpander, limit: int | None) -> None:
        self.inner = inner
        self.limit = limit
        self.spent = 0

    async def propose(
        self, steps: Sequence[str], n: int, *, kind: PromptKind = "step", temperature: float | None = None
    ) -> list[Candidate]:
        if self.limit is not None and self.spent >= self.limit:
            raise ThinkingBudgetExhausted(f"{self.spent} tokens generated, budget {self.limit}")
        candidates = await self.inner.propose(steps, n, kind=kind, temperature=temperature)
        self.spent += sum(c.num_tokens for c in candidates)
        return candidates

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        return await self.inner.score(paths, known)


def best_so_far(tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """What a search cut short (deadline or token budget) returns: the path the strategy last marked best."""
    leaf = tree.best or tree.root
    answer = extract_answer(leaf.text, config.choices or None) if leaf.final else None
    return SearchOutcome(leaf, answer, final=leaf.final)


async def within_budget(
    search: Awaitable[SearchOutcome], tree: SearchTree, config: SearchConfig
) -> tuple[SearchOutcome, bool]:
    """Run a search over a ``TokenBudget`` expander: its outcome, or the best path so far and ``True`` (truncated)
    when the budget ran out."""
    try:
        return await search, False
    except ThinkingBudgetExhausted:
        return best_so_far(tree, config), True


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
    """One PRM call for every path ending at ``nodes``, with the scores their nearest scored ancestors hold."""
    scores = await expander.score([node.steps() for node in nodes], [node.known_scores() for node in nodes])
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


def _mark_best(tree: SearchTree, leaves: Sequence[Node], pruned: set[int] | frozenset[int] = frozenset()) -> None:
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


async def _rollouts(
    expander: StepExpander,
    tree: SearchTree,
    config: SearchConfig,
    *,
    n: int | None = None,
    score: bool = True,
    prune: bool = False,
) -> tuple[list[Node], set[int]]:
    """Sample ``n`` (default ``candidates``) whole paths in lockstep: all open paths advance one step per round; then
    one PRM call scores every path not yet scored to its end (unless ``score`` is False).

    With ``prune`` and a ``prune_fraction``, after every ``prune_interval`` rounds one PRM call scores the open
    paths and ``prune_choice`` stops the lowest-scored of them (speculative rejection, Sun et al., 2024): they keep
    their partial scores and rank after every finished path. Returns the leaves and the indices of the pruned.
    """
    first = await expander.propose([], n or config.candidates, temperature=config.temperature)
    leaves = [tree.add(tree.root, c.text, judge=False) for c in first]
    _mark_best(tree, leaves)
    pruned: set[int] = set()
    for done_steps in range(1, config.max_steps):
        open_leaves = [i for i, leaf in enumerate(leaves) if not leaf.final and i not in pruned]
        if not open_leaves:
            break
        if prune and config.prune_fraction > 0 and done_steps % config.prune_interval == 0:
            await _score_nodes(expander, [leaves[i] for i in open_leaves])
            tree.scored([leaves[i] for i in open_leaves])
            partial = [leaves[i].path_scores or [] for i in open_leaves]
            pruned.update(open_leaves[j] for j in prune_choice(partial, config.prune_fraction, config.aggregation))
            open_leaves = [i for i in open_leaves if i not in pruned]
        proposals = await asyncio.gather(
            *(expander.propose(leaves[i].steps(), 1, temperature=config.temperature) for i in open_leaves)
        )
        for i, [candidate] in zip(open_leaves, proposals, strict=True):
            leaves[i] = tree.add(leaves[i], candidate.text, judge=False)
        _mark_best(tree, leaves, pruned)
    if score:
        unscored = [leaf for leaf in leaves if len(leaf.path_scores or []) != leaf.depth]
        if unscored:
            await _score_nodes(expander, unscored)
            tree.scored(unscored)
    return leaves, pruned


def steps_saved(leaves: Sequence[Node], pruned: set[int], config: SearchConfig) -> float:
    """Estimated steps not generated against ``candidates`` whole paths: each path never sampled would have been as
    long as the mean path that ran to its end, and each pruned path would have reached that length."""
    full = [leaf.depth for i, leaf in enumerate(leaves) if i not in pruned]
    if not full:
        return 0.0
    mean = sum(full) / len(full)
    cut = sum(max(0.0, mean - leaves[i].depth) for i in pruned)
    return max(0, config.candidates - len(leaves)) * mean + cut


def _rank(leaves: Sequence[Node], config: SearchConfig) -> list[Node]:
    """Finished paths first, then by aggregated score (stable: earlier samples win ties)."""
    return sorted(leaves, key=lambda n: rank_key(n.final, n.path_scores or [], config.aggregation), reverse=True)


async def best_of_n(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """Path-level best-of-N: sample N atomic paths, score every step, return the best aggregated path; with a
    ``prune_fraction`` the lowest-scored open paths are stopped every ``prune_interval`` rounds."""
    leaves, pruned = await _rollouts(expander, tree, config, prune=True)
    best = tree.best = _rank(leaves, config)[0]
    answer: str | None
    if best.final:
        leaf, answer = best, _answer_of(best.text, config)
    else:
        fallback = await _fallback_answer(expander, best, config)
        leaf, answer = fallback.leaf, fallback.answer
    saved = steps_saved(leaves, pruned, config)
    return SearchOutcome(leaf, answer, best.final, paths=len(leaves), pruned=len(pruned), steps_saved=saved)


def tally(answers: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Total weight per answer (a weight of 1 per path is a plain vote count), in order of first appearance."""
    totals: dict[str, float] = {}
    for answer, weight in zip(answers, weights, strict=True):
        totals[answer] = totals.get(answer, 0.0) + weight
    return totals


def leader_index(answers: Sequence[str], weights: Sequence[float]) -> int:
    """The vote's winner: the first ballot (in tie order) whose answer has the top total."""
    totals = tally(answers, weights)
    top = max(totals.values())
    return next(i for i, answer in enumerate(answers) if totals[answer] == top)


def ballots(
    leaves: Sequence[Node], config: SearchConfig, *, weighted: bool
) -> tuple[list[Node], list[str], list[float]]:
    """The finished paths in tie order, their answers and their vote weights.

    Tie order is sampling order for a plain vote with ``tie_break="first"`` (OpenR's ``max(counts, key=counts.get)``)
    and best aggregated score first otherwise. A weight is 1, or the path's aggregated PRM score when ``weighted``.
    """
    scored = weighted or config.tie_break == "prm"
    ranked = _rank(leaves, config) if scored else [leaf for leaf in leaves if leaf.final]
    finished = [leaf for leaf in ranked if leaf.final]
    answers = [_answer_of(leaf.text, config) for leaf in finished]
    weights = [aggregate(leaf.path_scores or [], config.aggregation) if weighted else 1.0 for leaf in finished]
    return finished, answers, weights


def next_wave(config: SearchConfig, sampled: int) -> int:
    """Paths in an adaptive vote's next wave: ``min_candidates`` first, then ``wave_size``, never past the ceiling."""
    return min(config.wave_size if sampled else config.min_candidates, config.candidates - sampled)


def _leader_is_safe(totals: dict[str, float], leader: str, remaining: int, ties_to_earlier: bool) -> bool:
    """No answer, seen or not, can reach the leader's total with ``remaining`` more ballots of weight at most 1
    (or only tie it, when ties go to the earlier answer and the leader is earlier)."""
    order = list(totals)
    rivals: list[str | None] = [a for a in order if a != leader] + [None]  # None: an answer not sampled yet
    for rival in rivals:
        gap = totals[leader] - (totals[rival] if rival is not None else 0.0)
        if gap > remaining:
            continue
        leader_first = rival is None or order.index(leader) < order.index(rival)
        if ties_to_earlier and gap == remaining and leader_first:
            continue
        return False
    return True


def vote_stop(
    answers: Sequence[str], weights: Sequence[float], sampled: int, config: SearchConfig, *, weighted: bool
) -> StopReason | None:
    """Whether an adaptive vote stops after ``sampled`` paths whose finished ones cast ``answers`` (in tie order)
    with ``weights`` (each at most 1: a vote, or an aggregated PRM probability). The rules, in order:

    * ``ceiling``: ``candidates`` paths are sampled;
    * ``safe``: no outcome of the ``candidates - sampled`` paths still allowed can change the winner;
    * ``certain``: the leader has at least ``stop_votes`` paths and at least ``stop_share`` of the votes cast
      (of the summed weight when ``weighted``), so with ``min_candidates = m`` it reads "k agreeing of the first m".

    ``safe`` and ``certain`` are not considered before ``min_candidates`` paths.
    """
    remaining = config.candidates - sampled
    if remaining <= 0:
        return "ceiling"
    if sampled < config.min_candidates or not answers:
        return None
    totals = tally(answers, weights)
    leader = answers[leader_index(answers, weights)]
    ties_to_earlier = not weighted and config.tie_break == "first"
    if _leader_is_safe(totals, leader, remaining, ties_to_earlier):
        return "safe"
    cast = sum(totals.values())
    if answers.count(leader) >= config.stop_votes and cast > 0 and totals[leader] >= config.stop_share * cast:
        return "certain"
    return None


async def _adaptive_rollouts(
    expander: StepExpander, tree: SearchTree, config: SearchConfig, *, weighted: bool
) -> tuple[list[Node], StopReason]:
    """Sample paths in waves (``next_wave``) until ``vote_stop`` says why to stop; the current leader's path is the
    best so far after each wave."""
    scored = weighted or config.tie_break == "prm"
    leaves: list[Node] = []
    while True:
        new, _ = await _rollouts(expander, tree, config, n=next_wave(config, len(leaves)), score=scored)
        leaves += new
        finished, answers, weights = ballots(leaves, config, weighted=weighted)
        if finished:
            tree.best = finished[leader_index(answers, weights)]
        reason = vote_stop(answers, weights, len(leaves), config, weighted=weighted)
        if reason is not None:
            return leaves, reason


async def _vote(expander: StepExpander, tree: SearchTree, config: SearchConfig, *, weighted: bool) -> SearchOutcome:
    """Vote over N sampled paths, one vote per path or the path's aggregated PRM score.

    A plain vote calls no PRM and gives a tie to the answer sampled first (OpenR's ``max(counts, key=counts.get)``),
    unless ``tie_break="prm"``; otherwise ties go to the best-scored path. With ``adaptive`` the paths come in waves
    and sampling stops early (``vote_stop``).
    """
    reason: StopReason | None = None
    if config.adaptive:
        leaves, reason = await _adaptive_rollouts(expander, tree, config, weighted=weighted)
    else:
        scored = weighted or config.tie_break == "prm"
        leaves, _ = await _rollouts(expander, tree, config, score=scored)
    finished, answers, weights = ballots(leaves, config, weighted=weighted)
    if not finished:
        # Unscored leaves keep sampling order; scored ones go best first.
        tree.best = _rank(leaves, config)[0] if weighted or config.tie_break == "prm" else leaves[0]
        outcome = await _fallback_answer(expander, tree.best, config)
        return SearchOutcome(
            outcome.leaf,
            outcome.answer,
            final=False,
            paths=len(leaves),
            stop_reason=reason,
            steps_saved=steps_saved(leaves, set(), config),
        )
    index = leader_index(answers, weights)
    tree.best = finished[index]
    return SearchOutcome(
        finished[index],
        answers[index],
        final=True,
        votes=dict(Counter(answers)),
        vote_weights={a: round(w, 6) for a, w in tally(answers, weights).items()} if weighted else None,
        paths=len(leaves),
        stop_reason=reason,
        steps_saved=steps_saved(leaves, set(), config),
    )


async def majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """Majority vote over N sampled paths, without PRM calls; ties go to the answer sampled first."""
    return await _vote(expander, tree, config, weighted=False)


async def weighted_majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    """PRM-weighted vote: each answer gets the sum of its paths' aggregated scores (Uesato et al., 2022)."""
    return await _vote(expander, tree, config, weighted=True)
