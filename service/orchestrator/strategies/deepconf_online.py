"""DeepConf online (Fu et al., arXiv 2508.15260, Algorithm 2): a warm-up wave sets a confidence threshold, later
paths stop as soon as a step's confidence falls below it, and sampling stops on consensus; no PRM call.

* Warm-up: ``warmup`` whole paths. The threshold is the ``100 - eta`` percentile of their confidences (``measure``,
  by default the lowest step confidence); those at or above it vote.
* Then paths in waves of ``wave_size`` (at most ``candidates`` paths in all). A path stops at the first step whose
  confidence (the mean token confidence over the step: the window is one atomic step) is below the threshold; a
  stopped path does not vote. A path that finishes votes with its confidence as weight.
* Before each wave, sampling stops once the leading answer holds at least ``consensus`` of the vote's weight
  (``stop_reason="certain"``), or when ``candidates`` paths were sampled (``ceiling``).
"""

from __future__ import annotations

from functools import partial

from pydantic import Field, model_validator

from service.orchestrator import confidence
from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StopReason,
    fallback_answer,
    field_error,
)
from service.orchestrator.strategies.confident_paths import ConfidenceBook, confident_rollouts
from service.orchestrator.strategies.deepconf import DeepConfParams
from service.orchestrator.strategies.paths import steps_saved
from service.orchestrator.strategies.registry import Strategy, register
from service.orchestrator.strategies.voting import ranked_vote, tally
from service.orchestrator.tree import Node, SearchTree


class DeepConfOnlineParams(DeepConfParams):
    """DeepConf online's fields: ``candidates`` is the ceiling of paths."""

    candidates: int = Field(16, ge=1, le=64)
    """Most paths sampled, the warm-up included (the ceiling)."""
    warmup: int = Field(4, ge=1, le=64)
    """Paths of the warm-up wave that sets the threshold (at most candidates)."""
    wave_size: int = Field(2, ge=1, le=64)
    """Paths sampled together after the warm-up."""
    consensus: float = Field(0.95, gt=0, le=1)
    """Share of the confidence-weighted vote the leading answer needs to stop sampling (DeepConf's tau)."""

    @model_validator(mode="after")
    def _warmup_fits(self) -> DeepConfOnlineParams:
        if self.warmup > self.candidates:
            raise field_error("warmup", "cannot exceed candidates (the ceiling)")
        return self


def below(book: ConfidenceBook, threshold: float, node: Node) -> bool:
    """DeepConf online's stop: the step just generated has a group confidence below the threshold."""
    step = book.steps.get(node.id)
    return step is not None and step.tokens > 0 and confidence.online_stop(step.group, threshold)


def vote(
    voters: list[tuple[Node, float]], context: SearchContext
) -> tuple[Node, str, dict[str, int], dict[str, float]]:
    """DeepConf's vote: each path weighs its confidence, ballots most confident first."""
    confidences = [c for _, c in voters]
    return ranked_vote([v for v, _ in voters], confidences, confidences, context)


async def search(
    expander: StepExpander, tree: SearchTree, context: SearchContext, params: DeepConfOnlineParams
) -> SearchOutcome:
    book = ConfidenceBook()
    k = params.logprobs_of(context)
    leaves, _ = await confident_rollouts(expander, tree, context, book, params.warmup, k)
    threshold = confidence.online_threshold([book.trace(leaf, params.measure) for leaf in leaves], params.eta)
    tree.emit(book.event([], threshold=threshold))
    voters = [(leaf, c) for leaf in leaves if leaf.final and (c := book.trace(leaf, params.measure)) >= threshold]
    stopped: set[int] = set()
    reason: StopReason
    while True:
        answers = [context.answer_of(leaf.text) for leaf, _ in voters]
        if voters and confidence.consensus(tally(answers, [c for _, c in voters])) >= params.consensus:
            reason = "certain"
            break
        if len(leaves) >= params.candidates:
            reason = "ceiling"
            break
        wave = min(params.wave_size, params.candidates - len(leaves))
        rule = partial(below, book, threshold)
        new, halted = await confident_rollouts(expander, tree, context, book, wave, k, stop=rule, threshold=threshold)
        stopped.update(len(leaves) + i for i in halted)
        voters += [
            (leaf, book.trace(leaf, params.measure)) for i, leaf in enumerate(new) if leaf.final and i not in halted
        ]
        leaves += new
        if voters:  # the voting paths stay alive on the page; the leader's is the best so far
            leader = vote(voters, context)[0]
            tree.select([v for v, _ in voters], best=leader)
    saved = steps_saved(leaves, stopped, params.candidates)
    if not voters:
        finished = [leaf for leaf in leaves if leaf.final] or leaves
        tree.best = max(finished, key=lambda leaf: book.trace(leaf, params.measure))
        outcome = await fallback_answer(expander, tree.best, context)
        return SearchOutcome(
            outcome.leaf,
            outcome.answer,
            final=False,
            paths=len(leaves),
            pruned=len(stopped),
            stop_reason=reason,
            steps_saved=saved,
        )
    leaf, answer, votes, weights = vote(voters, context)
    tree.best = leaf
    return SearchOutcome(
        leaf,
        answer,
        final=True,
        votes=votes,
        vote_weights=weights,
        paths=len(leaves),
        pruned=len(stopped),
        stop_reason=reason,
        steps_saved=saved,
    )


STRATEGY = register(
    Strategy(
        name="deepconf_online",
        summary="DeepConf online: a warm-up sets a confidence threshold, low-confidence paths stop early, "
        "sampling stops on consensus; no PRM",
        params=DeepConfOnlineParams,
        search=search,
        cost=lambda params: params.candidates,
        cost_doc="candidates (the ceiling)",
        uses_prm=False,
        path_level=True,
    )
)
