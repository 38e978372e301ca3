"""Metrics take their strategy labels from the registry: every slow strategy's series exist (at zero) from start-up."""

from __future__ import annotations

from prometheus_client import REGISTRY

from service import metrics
from service.orchestrator.strategies import registry


def test_every_registered_strategy_has_its_series_from_the_start() -> None:
    names = registry.names("slow")
    assert {"particle_filter", "dvts", "deepconf", "deepconf_online", "self_certainty", "self_certainty_vote"} <= set(
        names
    )
    for name in names:
        assert ("slow", name) in metrics.MODE_STRATEGIES
        value = REGISTRY.get_sample_value(
            "atomthink_solve_requests_total", {"mode": "slow", "strategy": name, "status": "ok"}
        )
        assert value is not None, f"no series for {name}"
    for name in ("deepconf", "deepconf_online", "self_certainty", "self_certainty_vote"):
        assert REGISTRY.get_sample_value("atomthink_solve_paths_total", {"mode": "slow", "strategy": name}) is not None
