"""What to run: one :class:`RunConfig` per solve setting, and the suites that group them into the paper's tables.

* ``modes``: Direct, CoT, QuickThink and SlowThink (beam, width 2, 3 candidates): the paper's main table.
* ``strategies``: majority vote, PRM-weighted vote, best-of-N under each aggregation (min, last, mean, prod),
  greedy and beam, all at the largest candidate count of ``--candidates``: the strategy comparison.
* ``scaling``: best-of-N, both votes, greedy and beam at every candidate count of ``--candidates``: the test-time
  scaling curves.
* ``paper``: all three, plus the capability analysis.
Without ``--suite`` the runs are every combination of ``--mode``, ``--strategy``, ``--aggregation`` and
``--candidates``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

from service.orchestrator.strategies import registry
from service.orchestrator.strategies.base import DEFAULT_CANDIDATES
from service.orchestrator.strategies.voting import DEFAULT_FIRST_WAVE
from service.schemas import AggregationName, Mode, SolveParams, Strategy

SuiteName = Literal["modes", "strategies", "scaling", "paper"]
SUITES: tuple[SuiteName, ...] = ("modes", "strategies", "scaling", "paper")
MODES: tuple[Mode, ...] = ("direct", "cot", "quick", "slow")
STRATEGIES: tuple[Strategy, ...] = tuple(registry.names("slow"))
"""The registered SlowThink strategies."""
AGGREGATIONS: tuple[AggregationName, ...] = get_args(AggregationName)
MODE_LABELS = {"direct": "Direct", "cot": "CoT", "quick": "QuickThink", "slow": "SlowThink"}
STRATEGY_LABELS = {
    "beam": "Beam search",
    "greedy": "Greedy",
    "best_of_n": "Best-of-N",
    "majority": "Majority vote",
    "weighted_majority": "PRM-weighted vote",
}
AGGREGATION_CURVES: tuple[Strategy, ...] = ("best_of_n", "weighted_majority")
"""Strategies whose rows and scaling curves are one per aggregation (it picks their answer, not just ties)."""
ADAPTIVE_ABOVE = DEFAULT_FIRST_WAVE
"""``--adaptive`` and ``--prune-fraction`` add runs only above this many candidates (the service's
``min_candidates``: at or below it an adaptive vote is the fixed one)."""
PAPER_BEAM_WIDTH = 2
PAPER_BEAM_CANDIDATES = 3
"""The paper's SlowThink beam (3 candidates per beam, 2 beams)."""


def _default(strategy: Strategy, field_name: str) -> object:
    """The registered strategy's default for one of its fields (None when it has no such field)."""
    info = registry.get(strategy).params.model_fields.get(field_name)
    return info.default if info is not None else None


FieldValue = int | float | bool | str
"""A strategy field's value given on the command line."""


def _takes(strategy: Strategy, field_name: str) -> bool:
    return field_name in registry.get(strategy).params.model_fields


@dataclass(frozen=True)
class RunConfig:
    """One solve setting; ``key`` names it in the results file (so a resumed run knows what it has done)."""

    mode: Mode
    strategy: Strategy | None = None
    aggregation: AggregationName | None = None
    candidates: int | None = None
    beam_width: int | None = None
    adaptive: bool = False
    """Votes: sampled in waves with the service's stopping rule, ``candidates`` as the ceiling."""
    prune_fraction: float | None = None
    """Best-of-N: the fraction of open paths pruned every 2 steps (the service's default interval)."""
    fields: tuple[tuple[str, FieldValue], ...] = ()
    """Other fields of the strategy (``--set eta=10``), sorted by name."""

    @staticmethod
    def make(
        mode: Mode,
        strategy: Strategy | None = None,
        aggregation: AggregationName | None = None,
        candidates: int | None = None,
        beam_width: int | None = None,
        adaptive: bool = False,
        prune_fraction: float | None = None,
        fields: dict[str, FieldValue] | None = None,
    ) -> RunConfig:
        """A canonical config: slow-only fields resolved to the service's defaults, dropped for other modes; of
        ``fields``, those the strategy takes."""
        if mode != "slow":
            return RunConfig(mode)
        strategy = strategy or registry.DEFAULT_SLOW
        aggregation = aggregation or cast(AggregationName | None, _default(strategy, "aggregation"))
        width = (beam_width or cast(int, _default(strategy, "beam_width"))) if strategy == "beam" else None
        n = candidates or DEFAULT_CANDIDATES
        adaptive = adaptive and _takes(strategy, "adaptive")
        prune = prune_fraction if _takes(strategy, "prune_fraction") and prune_fraction else None
        own = tuple(sorted((k, v) for k, v in (fields or {}).items() if _takes(strategy, k)))
        return RunConfig(mode, strategy, aggregation, n, width, adaptive, prune, own)

    @property
    def key(self) -> str:
        if self.mode != "slow":
            return self.mode
        key = f"slow-{self.strategy}-{self.aggregation}-n{self.candidates}"
        key += f"-w{self.beam_width}" if self.beam_width else ""
        key += "-adaptive" if self.adaptive else ""
        key += f"-prune{self.prune_fraction:g}" if self.prune_fraction else ""
        return key + "".join(f"-{name}{value}" for name, value in self.fields)

    @property
    def _variant(self) -> str:
        own = "".join(f", {name} {value}" for name, value in self.fields)
        if self.adaptive:
            return ", adaptive" + own
        return (f", pruned {self.prune_fraction:g}" if self.prune_fraction else "") + own

    @property
    def label(self) -> str:
        """Row name in the tables."""
        if self.mode != "slow" or self.strategy is None:
            return MODE_LABELS[self.mode]
        name = STRATEGY_LABELS.get(self.strategy, self.strategy)
        if self.strategy in AGGREGATION_CURVES:
            name += f" ({self.aggregation})"
        if self.strategy == "beam":
            return f"{name} (N={self.candidates}, width {self.beam_width})"
        return f"{name} (N={self.candidates}{self._variant})"

    @property
    def mode_label(self) -> str:
        """Row name in the modes table: the mode, with the search setting for SlowThink."""
        if self.mode != "slow":
            return MODE_LABELS[self.mode]
        return f"SlowThink: {self.label}"

    @property
    def curve(self) -> str:
        """The scaling curve this config is a point of (strategy, and aggregation where it is chosen)."""
        if self.strategy in AGGREGATION_CURVES:
            return f"{STRATEGY_LABELS[self.strategy]} ({self.aggregation}{self._variant})"
        if self.adaptive:
            return f"{STRATEGY_LABELS['majority']} (adaptive)"
        if self.strategy == "beam":
            return f"{STRATEGY_LABELS['beam']} (width {self.beam_width})"
        return STRATEGY_LABELS.get(self.strategy or "", MODE_LABELS[self.mode])

    def params(
        self,
        question: str,
        choices: Sequence[str] | None,
        *,
        seed: int | None,
        max_steps: int,
        temperature: float | None = None,
        deadline_ms: int | None = None,
    ) -> SolveParams:
        return SolveParams(
            question=question,
            choices=list(choices) if choices else None,
            mode=self.mode,
            strategy=self.strategy,
            aggregation=self.aggregation,
            candidates=self.candidates,
            beam_width=self.beam_width,
            max_steps=max_steps,
            temperature=temperature,
            seed=seed,
            deadline_ms=deadline_ms,
            adaptive=True if self.adaptive else None,
            prune_fraction=self.prune_fraction,
            **dict(self.fields),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "run": self.key,
            "mode": self.mode,
            "strategy": self.strategy,
            "aggregation": self.aggregation,
            "candidates": self.candidates,
            "beam_width": self.beam_width,
            "adaptive": self.adaptive,
            "prune_fraction": self.prune_fraction,
            "fields": dict(self.fields),
        }

    @staticmethod
    def from_record(record: dict[str, object]) -> RunConfig:
        return RunConfig.make(
            cast(Mode, record["mode"]),
            cast(Strategy | None, record.get("strategy")),
            cast(AggregationName | None, record.get("aggregation")),
            cast(int | None, record.get("candidates")),
            cast(int | None, record.get("beam_width")),
            bool(record.get("adaptive")),
            cast(float | None, record.get("prune_fraction")),
            cast(dict[str, FieldValue] | None, record.get("fields")),
        )


@dataclass
class Plan:
    """The runs to do and which of them fill each table (a config may appear in several)."""

    modes: list[RunConfig] = field(default_factory=list)
    strategies: list[RunConfig] = field(default_factory=list)
    scaling: list[RunConfig] = field(default_factory=list)
    capabilities: bool = False

    @property
    def runs(self) -> list[RunConfig]:
        """Every distinct config, in table order."""
        return list(dict.fromkeys([*self.modes, *self.strategies, *self.scaling]))


def suite_plan(
    suite: SuiteName,
    candidates: Sequence[int],
    *,
    aggregation: AggregationName | None = None,
    beam_width: int | None = None,
) -> Plan:
    """The runs of a named suite; ``candidates`` drive the strategy table (its largest) and the scaling curves."""
    width = beam_width or PAPER_BEAM_WIDTH
    plan = Plan(capabilities=suite == "paper")
    if suite in ("modes", "paper"):
        plan.modes = [RunConfig.make(m) for m in ("direct", "cot", "quick")]
        plan.modes.append(RunConfig.make("slow", "beam", None, PAPER_BEAM_CANDIDATES, width))
    if suite in ("strategies", "paper"):
        n = max(candidates)
        plan.strategies = [RunConfig.make("slow", s, None, n) for s in ("majority", "weighted_majority")]
        plan.strategies += [RunConfig.make("slow", "best_of_n", agg, n) for agg in AGGREGATIONS]
        plan.strategies += [RunConfig.make("slow", "greedy", None, n), RunConfig.make("slow", "beam", None, n, width)]
    if suite in ("scaling", "paper"):
        for strategy in ("best_of_n", "majority", "weighted_majority", "greedy", "beam"):
            agg = aggregation if strategy in AGGREGATION_CURVES else None
            plan.scaling += [
                RunConfig.make("slow", cast(Strategy, strategy), agg, n, width) for n in sorted(set(candidates))
            ]
    return plan


def custom_plan(
    modes: Sequence[Mode],
    strategies: Sequence[Strategy],
    aggregations: Sequence[AggregationName | None],
    candidates: Sequence[int | None],
    beam_width: int | None = None,
    *,
    adaptive: bool = False,
    prune_fraction: float | None = None,
    fields: dict[str, FieldValue] | None = None,
) -> Plan:
    """Every combination of the flags; slow runs also fill the strategy table and, across candidate counts, the
    scaling curves. ``adaptive`` adds an adaptive run of each vote, ``prune_fraction`` a pruned run of each
    best-of-N, at every candidate count above ``ADAPTIVE_ABOVE``; ``fields`` go to every strategy that takes them."""
    runs: list[RunConfig] = []
    for mode in modes:
        if mode != "slow":
            runs.append(RunConfig.make(mode))
            continue
        for strategy, agg, n in itertools.product(strategies or ("beam",), aggregations or (None,), candidates):
            runs.append(RunConfig.make(mode, strategy, agg, n, beam_width, fields=fields))
            if (n or PAPER_BEAM_CANDIDATES) > ADAPTIVE_ABOVE:
                if adaptive and _takes(strategy, "adaptive"):
                    runs.append(RunConfig.make(mode, strategy, agg, n, adaptive=True, fields=fields))
                if prune_fraction and _takes(strategy, "prune_fraction"):
                    runs.append(RunConfig.make(mode, strategy, agg, n, prune_fraction=prune_fraction, fields=fields))
    runs = list(dict.fromkeys(runs))
    slow = [r for r in runs if r.mode == "slow"]
    many_n = len({r.candidates for r in slow}) > 1
    return Plan(modes=runs, strategies=slow if not many_n else [], scaling=slow if many_n else [])
