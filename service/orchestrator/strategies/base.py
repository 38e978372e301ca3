"""What every search strategy shares: the expander it drives, the request's common knobs, its parameters' base
model, the outcome it returns, and the token budget and fallback every strategy honours.

A strategy module (one file, see ``registry.py``) declares a ``StrategyParams`` subclass and an async search function
``search(expander, tree, context, params) -> SearchOutcome``. Every strategy keeps ``tree.best`` up to date, so a
deadline or a spent token budget can return the best path found so far.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from atomthink.prompts import SearchDefaults
from atomthink.protocol import Candidate, PromptKind
from atomthink.steps import extract_answer
from service.orchestrator.tree import Aggregation, Node, SearchTree, rank_key

DEFAULT_CANDIDATES = 3
"""Candidates per step (step-level strategies) or whole paths (path-level ones) when a request gives none."""

Candidates = Annotated[
    int,
    Field(
        ge=1,
        le=64,
        description="Candidates per step (step-level strategies) or whole paths sampled (path-level strategies).",
    ),
]


class StepExpander(Protocol):
    """What a strategy needs: sample continuations of a state, and score paths.

    ``propose`` returns ``Candidate`` objects: a strategy that reads more of a sample (token log-probabilities, for
    instance) reads it from them. A PRM-free strategy never calls ``score``.
    """

    async def propose(
        self,
        steps: Sequence[str],
        n: int,
        *,
        kind: PromptKind = "step",
        temperature: float | None = None,
        logprobs: int | None = None,
    ) -> list[Candidate]: ...

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        """PRM scores of every step of each path; ``known`` (per path, or empty) holds scores of its first steps
        from an earlier call, which the PRM may return instead of recomputing them."""
        ...


@dataclass(frozen=True)
class SearchContext:
    """The request's knobs every strategy reads (validated at the API edge), whatever the strategy."""

    max_steps: int = 20
    """Most atomic steps per path."""
    temperature: float = 0.7
    """The request's sampling temperature (strategies may sample hotter, e.g. QuickThink's resamples)."""
    choices: tuple[str, ...] = ()
    """Multiple-choice options: answers are then option letters."""
    max_retries: int = 5
    """QuickThink: resamples of an invalid step (the server's setting)."""
    retry_temperature_step: float = 0.1
    """QuickThink: temperature added per resample (the server's setting)."""
    preset: SearchDefaults = field(default_factory=SearchDefaults)
    """The prompt preset's search defaults (the official SlowThink's beam knobs for the released checkpoints)."""
    seed: int = 0
    """The request's seed: strategies that draw at random (particle resampling) seed their generator with it."""
    top_logprobs: int = 20
    """Top log-probabilities per token a confidence strategy asks for when its request does not say (settings)."""

    def answer_of(self, text: str) -> str:
        """The answer a final step states (an option letter when the request has choices)."""
        return extract_answer(text, self.choices or None)


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: the request fields that belong to it. Each field has limits and a
    docstring (it becomes the field's description in the OpenAPI schema and the README's table)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @property
    def candidates_per_call(self) -> int:
        """Candidates the policy is asked for at once (the request's metrics bucket); 1 unless overridden."""
        return 1


class ScoredParams(StrategyParams):
    """Parameters of a strategy that samples ``candidates`` and ranks paths by an aggregated PRM score."""

    candidates: Candidates = DEFAULT_CANDIDATES
    """Candidates per step (beam, greedy) or whole paths sampled (best_of_n and the votes)."""
    aggregation: Aggregation = "min"
    """How a path's step scores make its score: min (worst action), last, mean or prod."""

    @property
    def candidates_per_call(self) -> int:
        return self.candidates


StopReason = Literal["safe", "certain", "ceiling"]


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
        self,
        steps: Sequence[str],
        n: int,
        *,
        kind: PromptKind = "step",
        temperature: float | None = None,
        logprobs: int | None = None,
    ) -> list[Candidate]:
        if self.limit is not None and self.spent >= self.limit:
            raise ThinkingBudgetExhausted(f"{self.spent} tokens generated, budget {self.limit}")
        candidates = await self.inner.propose(steps, n, kind=kind, temperature=temperature, logprobs=logprobs)
        self.spent += sum(c.num_tokens for c in candidates)
        return candidates

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        return await self.inner.score(paths, known)


def best_so_far(tree: SearchTree, context: SearchContext) -> SearchOutcome:
    """What a search cut short (deadline or token budget) returns: the path the strategy last marked best."""
    leaf = tree.best or tree.root
    answer = context.answer_of(leaf.text) if leaf.final else None
    return SearchOutcome(leaf, answer, final=leaf.final)


async def within_budget(
    search: Awaitable[SearchOutcome], tree: SearchTree, context: SearchContext
) -> tuple[SearchOutcome, bool]:
    """Run a search over a ``TokenBudget`` expander: its outcome, or the best path so far and ``True`` (truncated)
    when the budget ran out."""
    try:
        return await search, False
    except ThinkingBudgetExhausted:
        return best_so_far(tree, context), True


async def fallback_answer(expander: StepExpander, leaf: Node, context: SearchContext) -> SearchOutcome:
    """No final step within the budget: ask once for a direct answer after the steps so far."""
    [candidate] = await expander.propose(leaf.steps(), 1, kind="final", temperature=context.temperature)
    return SearchOutcome(leaf, context.answer_of(candidate.text) or None, final=False)


async def score_nodes(
    expander: StepExpander, tree: SearchTree, nodes: Sequence[Node], *, last_only: bool = False
) -> None:
    """One PRM call for every path ending at ``nodes``, with the scores their nearest scored ancestors hold; the
    tree reports the scores. With ``last_only`` the PRM scores each path's last step only: the earlier steps go as
    known stand-ins (0.0, so a per-step backend sends no prompt for them) and the node marks them (``stand_ins``)."""
    known = [[0.0] * (n.depth - 1) if last_only else n.known_scores() for n in nodes]
    scores = await expander.score([node.steps() for node in nodes], known)
    for node, path_scores in zip(nodes, scores, strict=True):
        node.path_scores = path_scores
        node.stand_ins = node.depth - 1 if last_only else 0
    tree.scored(nodes)


def rank(leaves: Sequence[Node], how: Aggregation) -> list[Node]:
    """Finished paths first, then by aggregated score (stable: earlier samples win ties)."""
    return sorted(leaves, key=lambda n: rank_key(n.final, n.path_scores or [], how), reverse=True)


def cot_steps(text: str) -> list[str]:
    """A CoT generation's atomic steps: its non-empty lines, stripped (the cot prompt asks for one step per line)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


async def one_shot(expander: StepExpander, tree: SearchTree, context: SearchContext, kind: PromptKind) -> SearchOutcome:
    """Modes ``direct`` and ``cot`` (not strategies): one generation; a CoT answer is split into its lines as steps."""
    [candidate] = await expander.propose([], 1, kind=kind, temperature=context.temperature)
    node = tree.root
    lines = cot_steps(candidate.text) if kind == "cot" else []
    for line in lines or [candidate.text.strip()]:
        node = tree.add(node, line, judge=False)
    tree.best = node
    return SearchOutcome(node, context.answer_of(candidate.text) or None, final=node.final or kind == "direct")


def field_error(field: str, message: str) -> PydanticCustomError:
    """A validation error that names its field (model validators otherwise report at the model root): the API
    answers it with a 422 whose ``field`` is ``field``."""
    return PydanticCustomError("invalid_combination", "{message}", {"field": field, "message": message})
