"""Search strategies, one module each, and the registry that the API, quotas, solver and evaluation read.

Importing this package registers the built-in strategies: ``quick`` (QuickThink), ``beam``, ``greedy``,
``best_of_n``, ``majority`` and ``weighted_majority``; and (issue 25) ``particle_filter``, ``dvts``, ``deepconf``,
``deepconf_online``, ``self_certainty`` and ``self_certainty_vote``. A new strategy is a module here, imported below,
that calls ``registry.register`` (see ``registry.py`` for what it declares).
"""

from __future__ import annotations

from service.orchestrator.strategies import (  # noqa: F401  (imported to register)
    beam,
    best_of_n,
    deepconf,
    deepconf_online,
    dvts,
    greedy,
    majority,
    particle_filter,
    quick,
    self_certainty,
    self_certainty_vote,
    weighted_majority,
)
from service.orchestrator.strategies.base import (
    SearchContext,
    SearchOutcome,
    StepExpander,
    StrategyParams,
    TokenBudget,
    best_so_far,
    one_shot,
    within_budget,
)
from service.orchestrator.strategies.registry import Strategy, for_mode, get, names, register

__all__ = [
    "SearchContext",
    "SearchOutcome",
    "StepExpander",
    "Strategy",
    "StrategyParams",
    "TokenBudget",
    "best_so_far",
    "for_mode",
    "get",
    "names",
    "one_shot",
    "register",
    "within_budget",
]
