"""Votes over whole sampled paths (``majority``, ``weighted_majority``), fixed-N or adaptive (paths in waves until the
leader is safe or certain)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pydantic import Field, model_validator

from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StopReason,
    fallback_answer,
    field_error,
    rank,
)
from service.orchestrator.strategies.paths import PathParams, rollouts, steps_saved
from service.orchestrator.tree import Node, SearchTree, aggregate

DEFAULT_FIRST_WAVE = 4
ADAPTIVE_FIELDS = ("min_candidates", "wave_size", "stop_votes", "stop_share")
"""Parameters of the adaptive vote's stopping rule: they need ``adaptive: true``."""


class VoteParams(PathParams):
    """A vote's fields: the paths (``candidates``, the ceiling when adaptive) and the adaptive stopping rule."""

    adaptive: bool = False
    """Sample paths in waves and stop once the leading answer is safe or certain (stop_votes, stop_share);
    candidates is then the ceiling."""
    min_candidates: int | None = Field(None, ge=1, le=64)
    """Adaptive: paths in the first wave, before any stop (default 4, at most candidates)."""
    wave_size: int = Field(2, ge=1, le=64)
    """Adaptive: paths per later wave."""
    stop_votes: int = Field(3, ge=1, le=64)
    """Adaptive: paths the leader needs for the certainty stop."""
    stop_share: float = Field(0.75, gt=0, le=1)
    """Adaptive: share of the votes (of the PRM weight in weighted_majority) the leader needs for the certainty
    stop."""

    @model_validator(mode="after")
    def _check_adaptive(self) -> VoteParams:
        if not self.adaptive:
            for name in ADAPTIVE_FIELDS:
                if name in self.model_fields_set:
                    raise field_error(name, "applies with adaptive: true only")
        if self.min_candidates is not None and self.min_candidates > self.candidates:
            raise field_error("min_candidates", "cannot exceed candidates (the ceiling)")
        return self

    @property
    def first_wave(self) -> int:
        """Paths in an adaptive vote's first wave (no stop is considered before them)."""
        return self.min_candidates if self.min_candidates is not None else min(DEFAULT_FIRST_WAVE, self.candidates)

    @property
    def prm_ties(self) -> bool:
        """A tie goes to the best-scored path (so the PRM scores every path), not to the answer sampled first."""
        return True


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


def ranked_vote(
    finished: Sequence[Node], ranks: Sequence[float], weights: Sequence[float], context: SearchContext
) -> tuple[Node, str, dict[str, int], dict[str, float]]:
    """A weighted vote whose ballots go highest ``ranks`` first (the earlier path on a tie), each weighing its
    ``weights`` entry: the winning answer's highest-ranked path, the answer, the ballot counts and the rounded
    weight totals (the confidence strategies: DeepConf's confidence, the self-certainty vote's Borda weights)."""
    order = sorted(range(len(finished)), key=lambda i: (-ranks[i], i))
    answers = [context.answer_of(finished[i].text) for i in order]
    ordered = [weights[i] for i in order]
    index = leader_index(answers, ordered)
    totals = {a: round(w, 6) for a, w in tally(answers, ordered).items()}
    return finished[order[index]], answers[index], dict(Counter(answers)), totals


def ballots(
    leaves: Sequence[Node], context: SearchContext, params: VoteParams, *, weighted: bool
) -> tuple[list[Node], list[str], list[float]]:
    """The finished paths in tie order, their answers and their vote weights.

    Tie order is sampling order for a plain vote with ``tie_break="first"`` (OpenR's ``max(counts, key=counts.get)``)
    and best aggregated score first otherwise. A weight is 1, or the path's aggregated PRM score when ``weighted``.
    """
    scored = weighted or params.prm_ties
    ranked = rank(leaves, params.aggregation) if scored else [leaf for leaf in leaves if leaf.final]
    finished = [leaf for leaf in ranked if leaf.final]
    answers = [context.answer_of(leaf.text) for leaf in finished]
    weights = [aggregate(leaf.path_scores or [], params.aggregation) if weighted else 1.0 for leaf in finished]
    return finished, answers, weights


def next_wave(params: VoteParams, sampled: int) -> int:
    """Paths in an adaptive vote's next wave: the first wave, then ``wave_size``, never past the ceiling."""
    return min(params.wave_size if sampled else params.first_wave, params.candidates - sampled)


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
    answers: Sequence[str], weights: Sequence[float], sampled: int, params: VoteParams, *, weighted: bool
) -> StopReason | None:
    """Whether an adaptive vote stops after ``sampled`` paths whose finished ones cast ``answers`` (in tie order)
    with ``weights`` (each at most 1: a vote, or an aggregated PRM probability). The rules, in order:

    * ``ceiling``: ``candidates`` paths are sampled;
    * ``safe``: no outcome of the ``candidates - sampled`` paths still allowed can change the winner;
    * ``certain``: the leader has at least ``stop_votes`` paths and at least ``stop_share`` of the votes cast
      (of the summed weight when ``weighted``), so with a first wave of ``m`` it reads "k agreeing of the first m".

    ``safe`` and ``certain`` are not considered before the first wave is sampled.
    """
    remaining = params.candidates - sampled
    if remaining <= 0:
        return "ceiling"
    if sampled < params.first_wave or not answers:
        return None
    totals = tally(answers, weights)
    leader = answers[leader_index(answers, weights)]
    ties_to_earlier = not weighted and not params.prm_ties
    if _leader_is_safe(totals, leader, remaining, ties_to_earlier):
        return "safe"
    cast = sum(totals.values())
    if answers.count(leader) >= params.stop_votes and cast > 0 and totals[leader] >= params.stop_share * cast:
        return "certain"
    return None


async def _sample(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: VoteParams, n: int, *, weighted: bool
) -> list[Node]:
    """``n`` paths sampled as the vote's fields say, PRM-scored when the vote reads scores (weights or ties)."""
    leaves, _ = await rollouts(
        expander,
        tree,
        context,
        n,
        score=weighted or params.prm_ties,
        sampling=params.path_sampling,
        last_only=params.last_step_only,
    )
    return leaves


async def _adaptive_rollouts(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: VoteParams, *, weighted: bool
) -> tuple[list[Node], StopReason]:
    """Sample paths in waves (``next_wave``) until ``vote_stop`` says why to stop; the current leader's path is the
    best so far after each wave."""
    leaves: list[Node] = []
    while True:
        leaves += await _sample(expander, tree, context, params, next_wave(params, len(leaves)), weighted=weighted)
        finished, answers, weights = ballots(leaves, context, params, weighted=weighted)
        if finished:
            tree.best = finished[leader_index(answers, weights)]
        reason = vote_stop(answers, weights, len(leaves), params, weighted=weighted)
        if reason is not None:
            return leaves, reason


async def vote(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: VoteParams, *, weighted: bool
) -> SearchOutcome:
    """Vote over N sampled paths, one vote per path or the path's aggregated PRM score.

    A plain vote calls no PRM and gives a tie to the answer sampled first (OpenR's ``max(counts, key=counts.get)``),
    unless ``tie_break="prm"``; otherwise ties go to the best-scored path. With ``adaptive`` the paths come in waves
    and sampling stops early (``vote_stop``).
    """
    reason: StopReason | None = None
    if params.adaptive:
        leaves, reason = await _adaptive_rollouts(expander, tree, context, params, weighted=weighted)
    else:
        leaves = await _sample(expander, tree, context, params, params.candidates, weighted=weighted)
    saved = steps_saved(leaves, set(), params.candidates)
    finished, answers, weights = ballots(leaves, context, params, weighted=weighted)
    if not finished:
        # Unscored leaves keep sampling order; scored ones go best first.
        tree.best = rank(leaves, params.aggregation)[0] if weighted or params.prm_ties else leaves[0]
        outcome = await fallback_answer(expander, tree.best, context)
        return SearchOutcome(
            outcome.leaf, outcome.answer, final=False, paths=len(leaves), stop_reason=reason, steps_saved=saved
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
        steps_saved=saved,
    )
