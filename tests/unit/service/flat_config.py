"""The strategy tests' flat search configuration, mapped onto the registry's strategy modules.

The unit tests of the search algorithms were written against one flat configuration for every strategy; this module
keeps their calls (``strategies.beam(expander, tree, SearchConfig(...))``) by building each strategy's
``SearchContext`` and parameters from it. The knobs are set as given, without the API's cross-field checks (a test
may ask ``vote_stop`` about a configuration a request could not make).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from atomthink.prompts import SearchDefaults
from service.orchestrator.strategies import base, paths, voting
from service.orchestrator.strategies import beam as beam_module
from service.orchestrator.strategies import best_of_n as best_of_n_module
from service.orchestrator.strategies import majority as majority_module
from service.orchestrator.strategies import quick as quick_module
from service.orchestrator.strategies import weighted_majority as weighted_module
from service.orchestrator.strategies.base import SearchOutcome, StepExpander, TokenBudget
from service.orchestrator.tree import Aggregation, SearchTree

__all__ = ["SearchOutcome", "TokenBudget", "prune_choice"]

prune_choice = paths.prune_choice


@dataclass(frozen=True)
class SearchConfig:
    max_steps: int = 20
    temperature: float = 0.7
    candidates: int = 3
    beam_width: int = 2
    aggregation: Aggregation = "last"
    max_retries: int = 5
    retry_temperature_step: float = 0.1
    choices: tuple[str, ...] = ()
    beam_start: Literal["root", "beams"] = "root"
    keep_invalid: bool = False
    temperature_ramp: float = 0.0
    ramp_cap: float = 1.0
    max_samples: int | None = None
    tie_break: Literal["first", "prm"] = "first"
    adaptive: bool = False
    min_candidates: int = 4
    wave_size: int = 2
    stop_votes: int = 3
    stop_share: float = 0.75
    prune_fraction: float = 0.0
    prune_interval: int = 2


SearchStrategy = Callable[[StepExpander, SearchTree, SearchConfig], Awaitable[SearchOutcome]]


def context(config: SearchConfig) -> base.SearchContext:
    preset = SearchDefaults(ramp_cap=config.ramp_cap)
    return base.SearchContext(
        max_steps=config.max_steps,
        temperature=config.temperature,
        choices=config.choices,
        max_retries=config.max_retries,
        retry_temperature_step=config.retry_temperature_step,
        preset=preset,
    )


def _vote_fields(config: SearchConfig) -> dict[str, Any]:
    return {
        "candidates": config.candidates,
        "aggregation": config.aggregation,
        "adaptive": config.adaptive,
        "min_candidates": config.min_candidates,
        "wave_size": config.wave_size,
        "stop_votes": config.stop_votes,
        "stop_share": config.stop_share,
    }


def majority_params(config: SearchConfig) -> majority_module.MajorityParams:
    return majority_module.MajorityParams.model_construct(**_vote_fields(config), tie_break=config.tie_break)


def weighted_params(config: SearchConfig) -> weighted_module.WeightedMajorityParams:
    return weighted_module.WeightedMajorityParams.model_construct(**_vote_fields(config))


async def quick(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    return await quick_module.search(expander, tree, context(config), quick_module.QuickParams())


async def beam(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    params = beam_module.BeamParams.model_construct(
        candidates=config.candidates,
        beam_width=config.beam_width,
        aggregation=config.aggregation,
        beam_start=config.beam_start,
        keep_invalid=config.keep_invalid,
        temperature_ramp=config.temperature_ramp,
        max_samples=config.max_samples,
    )
    return await beam_module.search(expander, tree, context(config), params)


async def best_of_n(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    params = best_of_n_module.BestOfNParams.model_construct(
        candidates=config.candidates,
        aggregation=config.aggregation,
        prune_fraction=config.prune_fraction,
        prune_interval=config.prune_interval,
    )
    return await best_of_n_module.search(expander, tree, context(config), params)


async def majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    return await majority_module.search(expander, tree, context(config), majority_params(config))


async def weighted_majority(expander: StepExpander, tree: SearchTree, config: SearchConfig) -> SearchOutcome:
    return await weighted_module.search(expander, tree, context(config), weighted_params(config))


def ramp_temperatures(config: SearchConfig, n: int) -> list[float]:
    return beam_module.ramp_temperatures(config.temperature, config.temperature_ramp, config.ramp_cap, n)


def vote_stop(
    answers: Sequence[str], weights: Sequence[float], sampled: int, config: SearchConfig, *, weighted: bool
) -> voting.StopReason | None:
    params = weighted_params(config) if weighted else majority_params(config)
    return voting.vote_stop(answers, weights, sampled, params, weighted=weighted)


async def within_budget(
    search: Awaitable[SearchOutcome], tree: SearchTree, config: SearchConfig
) -> tuple[SearchOutcome, bool]:
    return await base.within_budget(search, tree, context(config))
