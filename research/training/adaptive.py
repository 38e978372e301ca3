"""Adaptive compute measured offline: the service's own strategies replayed over saved QuickThink paths.

``ReplayExpander`` is a ``StepExpander`` that hands out the steps of paths sampled earlier (in their sampling order,
each step with the tokens it took, resamples included) and their PRM scores, so the registered
``majority``, ``weighted_majority`` and ``best_of_n`` strategies run unchanged: the waves, the stopping rule
(``vote_stop``) and pruning (``prune_choice``) are the served ones, and the tokens counted are those the chosen
paths generated.

The PRM is causal, so the score of a step on a partial path is its score on the whole path: pruning checks read the
whole path's scores up to the current step.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomthink.protocol import Candidate, PromptKind
from service.orchestrator.strategies import registry
from service.orchestrator.strategies.base import SearchContext, StrategyParams
from service.orchestrator.tree import SearchTree

MAX_STEPS = 12


class ReplayExpander:
    """Serves recorded paths: a call at the root starts the next ``n`` unused paths; a call after some steps continues
    a path that has exactly those steps (first come, first served); ``final`` calls (the fallback prompt) answer
    nothing, as the recorded paths have no fallback."""

    def __init__(
        self, paths: Sequence[Sequence[str]], tokens: Sequence[Sequence[int]], scores: Sequence[Sequence[float]]
    ):
        self.paths, self.tokens = paths, tokens
        self.started = 0
        self.generated_tokens = 0
        self.waiting: dict[tuple[str, ...], deque[int]] = defaultdict(deque)
        self.prefix_scores: dict[tuple[str, ...], list[float]] = {}
        for path, path_scores in zip(paths, scores, strict=True):
            for k in range(1, len(path) + 1):
                self.prefix_scores.setdefault(tuple(path[:k]), list(path_scores[:k]))

    async def propose(
        self,
        steps: Sequence[str],
        n: int,
        *,
        kind: PromptKind = "step",
        temperature: float | None = None,
        logprobs: int | None = None,
    ) -> list[Candidate]:
        """The next recorded steps (the recorded paths carry no log-probabilities: ``logprobs`` is ignored)."""
        if kind == "final":
            return [Candidate(text="", num_tokens=0, finish_reason="eos") for _ in range(n)]
        state = tuple(steps)
        if state:
            ids = [self.waiting[state].popleft() for _ in range(n)]
        else:
            if self.started + n > len(self.paths):
                raise ValueError(f"asked for {self.started + n} paths, {len(self.paths)} recorded")
            ids = list(range(self.started, self.started + n))
            self.started += n
        out = []
        for i in ids:
            step, count = self.paths[i][len(state)], self.tokens[i][len(state)]
            self.waiting[(*state, step)].append(i)
            self.generated_tokens += count
            out.append(Candidate(text=step, num_tokens=count, finish_reason="delimiter"))
        return out

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        return [self.prefix_scores[tuple(path)] for path in paths]


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: a registered strategy and its parameters (as a request would give them)."""

    name: str
    family: str
    strategy: registry.Strategy[Any]
    params: StrategyParams


def _variant(name: str, family: str, strategy: str, **fields: Any) -> Variant:
    found = registry.get(strategy)
    return Variant(name, family, found, found.params.model_validate({"aggregation": "min", **fields}))


def variants(ceiling: int, sizes: Sequence[int]) -> list[Variant]:
    """Fixed N for every strategy, then the adaptive votes and pruned best-of-N at the ``ceiling``, at the service's
    defaults (each strategy's parameters)."""
    rows = []
    for family, name in (("majority", "majority"), ("weighted majority", "weighted_majority"),
                         ("best-of-N min", "best_of_n")):  # fmt: skip
        rows += [_variant(f"{family}, N = {n}", family, name, candidates=n) for n in sizes]
    for family, name in (("adaptive majority", "majority"), ("adaptive weighted majority", "weighted_majority")):
        rows.append(_variant(f"{family}, ceiling {ceiling}", family, name, candidates=ceiling, adaptive=True))
    rows.append(
        _variant(
            f"pruned best-of-N, N = {ceiling} (half every 2 steps)",
            "pruned",
            "best_of_n",
            candidates=ceiling,
            prune_fraction=0.5,
            prune_interval=2,
        )
    )
    return rows


@dataclass
class Row:
    name: str
    family: str
    candidates: int
    accuracy: float
    mean_tokens: float
    mean_paths: float
    stops: dict[str, int]


async def _replay(
    variant: Variant,
    problem: dict[str, Any],
    paths: Sequence[Sequence[str]],
    tokens: Sequence[Sequence[int]],
    scores: Sequence[Sequence[float]],
) -> tuple[bool, int, int, str | None]:
    expander = ReplayExpander(paths, tokens, scores)
    context = SearchContext(max_steps=MAX_STEPS, choices=tuple(problem.get("choices") or ()))
    outcome = await variant.strategy.run(expander, SearchTree(), context, variant.params)
    correct = outcome.final and outcome.answer == problem["answer"]
    return correct, expander.generated_tokens, outcome.paths or 0, outcome.stop_reason


def compare(
    problems: Sequence[dict[str, Any]],
    paths: Sequence[Sequence[Sequence[str]]],
    tokens: Sequence[Sequence[Sequence[int]]],
    scores: Sequence[Sequence[Sequence[float]]],
    sizes: Sequence[int] = (1, 2, 4, 8, 16),
) -> list[Row]:
    """Accuracy and mean generated tokens per problem of every ``variants`` row over the recorded paths."""
    ceiling = max(sizes)
    rows = []
    for variant in variants(ceiling, sizes):
        results = [
            asyncio.run(_replay(variant, p, ps, ts, sc))
            for p, ps, ts, sc in zip(problems, paths, tokens, scores, strict=True)
        ]
        stops: dict[str, int] = defaultdict(int)
        for *_, reason in results:
            if reason is not None:
                stops[reason] += 1
        rows.append(
            Row(
                variant.name,
                variant.family,
                variant.params.candidates_per_call,
                sum(r[0] for r in results) / len(results),
                sum(r[1] for r in results) / len(results),
                sum(r[2] for r in results) / len(results),
                dict(stops),
            )
        )
    return rows


def markdown(rows: Sequence[Row]) -> str:
    """The comparison as a markdown table, with each row's token saving against the fixed-N majority at its N."""
    reference = {r.candidates: r.mean_tokens for r in rows if r.family == "majority"}
    lines = [
        "| strategy | accuracy % | mean generated tokens | mean paths | tokens vs majority at N | stops |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = reference.get(r.candidates)
        delta = f"{100 * (r.mean_tokens / ref - 1):+.1f}%" if ref else ""
        stops = ", ".join(f"{k} {v}" for k, v in sorted(r.stops.items()))
        lines.append(
            f"| {r.name} | {100 * r.accuracy:.1f} | {r.mean_tokens:.1f} | {r.mean_paths:.2f} | {delta} | {stops} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path) -> Path:
    """Accuracy against mean generated tokens per problem: a line per fixed-N family, a marker per adaptive row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    families = [f for f in dict.fromkeys(r.family for r in rows)]
    markers = iter(["*", "P", "X", "D"])
    for i, family in enumerate(families):
        points = [r for r in rows if r.family == family]
        if len(points) > 1:
            ax.plot([r.mean_tokens for r in points], [100 * r.accuracy for r in points], marker="o", color=f"C{i}",
                    label=f"{family}, N = " + "/".join(str(r.candidates) for r in points))  # fmt: skip
        else:
            [r] = points
            ax.scatter([r.mean_tokens], [100 * r.accuracy], marker=next(markers), s=140, color=f"C{i}", label=r.name,
                       zorder=3)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("mean generated tokens per problem (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Accuracy against compute: fixed N vs adaptive (T = 1.6)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
