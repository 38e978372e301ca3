"""The strategy registry: what the API, the quotas, the solver, the evaluation and the README's table read.

A strategy is one module that builds a ``Strategy`` and calls ``register`` on import. It declares:

* ``params``: a ``StrategyParams`` subclass, the request fields that belong to it (limits and a docstring per
  field). ``/solve`` (JSON, form, multipart, and its OpenAPI schema) and the OpenAI facade's ``atomthink`` object
  take them; a field of another strategy is a 422 naming the field.
* ``search``: ``async search(expander, tree, context, params) -> SearchOutcome``. It samples through the expander
  (``Candidate`` objects, log-probabilities included where the backend returns them), scores through it if it uses a
  PRM, reports nodes through the tree (``add``, ``scored``, ``select``) and its own events through ``tree.emit``.
* ``cost``: candidates asked of the policy per step, what the per-key quota counts.
* ``uses_prm``: whether it ever calls the PRM (a PRM-free strategy's first prompt is checked against the policy only).

Adding a strategy is one module imported by ``service.orchestrator.strategies`` (or, in a test, one ``register``
call) and its tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic.fields import FieldInfo

from service.orchestrator.strategies.base import SearchContext, SearchOutcome, StepExpander, StrategyParams
from service.orchestrator.tree import SearchTree

P = TypeVar("P", bound=StrategyParams)

SearchMode = Literal["quick", "slow"]


@dataclass(frozen=True)
class Strategy(Generic[P]):
    """One search strategy: its name, its parameters, its cost and its search function."""

    name: str
    """The request's ``strategy`` (for ``mode="slow"``); QuickThink is ``quick`` and runs as ``mode="quick"``."""
    summary: str
    """One line for the README's table and the OpenAPI description."""
    params: type[P]
    search: Callable[[StepExpander, SearchTree, SearchContext, P], Awaitable[SearchOutcome]]
    cost: Callable[[P], int]
    """Candidates asked of the policy per step (the quotas' unit of compute)."""
    cost_doc: str
    """``cost`` in words, for the README's table (e.g. ``candidates x beam_width``)."""
    mode: SearchMode = "slow"
    uses_prm: bool = True
    path_level: bool = False
    """Samples whole paths (``candidates`` of them) rather than searching step by step: its response carries the
    paths spent and saved."""

    async def run(self, expander: StepExpander, tree: SearchTree, context: SearchContext, params: Any) -> SearchOutcome:
        """``search`` with the params this strategy validated (``SolveParams.search``)."""
        if not isinstance(params, self.params):
            raise TypeError(f"strategy {self.name!r} takes {self.params.__name__}, not {type(params).__name__}")
        return await self.search(expander, tree, context, params)


_REGISTRY: dict[str, Strategy[Any]] = {}

DEFAULT_SLOW = "beam"
"""The strategy of ``mode="slow"`` when the request names none."""


def register(strategy: Strategy[Any], *, replace: bool = False) -> Strategy[Any]:
    """Add a strategy; a second one under the same name is refused unless ``replace``."""
    if strategy.name in _REGISTRY and not replace and _REGISTRY[strategy.name] is not strategy:
        raise ValueError(f"strategy {strategy.name!r} is already registered")
    _REGISTRY[strategy.name] = strategy
    return strategy


def unregister(name: str) -> None:
    """Remove a strategy (tests that register their own)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Strategy[Any]:
    """The registered strategy ``name`` (``KeyError`` when there is none)."""
    return _REGISTRY[name]


def all_strategies() -> Iterator[Strategy[Any]]:
    """Every registered strategy, in registration order."""
    return iter(list(_REGISTRY.values()))


def ordered() -> list[Strategy[Any]]:
    """QuickThink, the default SlowThink strategy, then the others in registration order (the README's order)."""
    rank = {"quick": 0, DEFAULT_SLOW: 1}
    return sorted(_REGISTRY.values(), key=lambda s: rank.get(s.name, 2))


def names(mode: SearchMode | None = None) -> list[str]:
    """Names of the registered strategies (of one mode)."""
    return [s.name for s in _REGISTRY.values() if mode is None or s.mode == mode]


def for_mode(mode: str, strategy: str | None) -> Strategy[Any] | None:
    """The strategy a request runs: ``quick`` for QuickThink, the named one (default beam) for SlowThink, None for
    the one-shot modes. ``KeyError`` for an unknown name."""
    if mode == "quick":
        return _REGISTRY["quick"]
    if mode == "slow":
        found = _REGISTRY[strategy or DEFAULT_SLOW]
        if found.mode != "slow":
            raise KeyError(strategy)
        return found
    return None


def param_fields() -> dict[str, FieldInfo]:
    """Every strategy field by name (the first declaration wins: strategies sharing a field share its meaning)."""
    fields: dict[str, FieldInfo] = {}
    for strategy in _REGISTRY.values():
        for name, info in strategy.params.model_fields.items():
            fields.setdefault(name, info)
    return fields


def owners(field: str) -> list[str]:
    """Strategies that take ``field``."""
    return [s.name for s in _REGISTRY.values() if field in s.params.model_fields]
