"""The strategy registry: what each strategy declares, what the request model and the README's table take from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.api.errors import validation_to_error
from service.orchestrator.strategies import registry, table
from service.schemas import SolveJsonRequest, SolveParams

ROOT = Path(__file__).resolve().parents[3]
BUILT_IN = {"quick", "beam", "greedy", "best_of_n", "majority", "weighted_majority"}


def test_the_built_in_strategies_are_registered_with_documented_limited_fields() -> None:
    assert set(registry.names()) >= BUILT_IN and registry.names("quick") == ["quick"]
    for strategy in registry.all_strategies():
        assert strategy.summary and strategy.cost_doc
        for name, info in strategy.params.model_fields.items():
            assert info.description, f"{strategy.name}.{name} has no docstring"
            if info.annotation in (int, float, int | None, float | None):
                assert info.metadata, f"{strategy.name}.{name} has no limits"


@pytest.mark.parametrize("block", list(table.TARGETS))
def test_the_documented_tables_are_what_the_registry_renders(block: str) -> None:
    assert table.current(ROOT / table.TARGETS[block], block) == table.markdown(block), (
        f"{table.TARGETS[block]}'s {block} block is stale: .venv/bin/python -m service.orchestrator.strategies.table"
    )


def test_the_request_schema_lists_every_strategy_field() -> None:
    properties = SolveJsonRequest.model_json_schema()["properties"]
    assert set(registry.param_fields()) <= set(properties)
    assert properties["strategy"]["anyOf"][0]["enum"] == registry.names("slow")
    assert "beam, greedy" in properties["beam_start"]["description"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"mode": "slow", "strategy": "best_of_n", "tie_break": "prm"}, "tie_break"),
        ({"mode": "quick", "candidates": 2}, "candidates"),
        ({"mode": "direct", "aggregation": "min"}, "aggregation"),
        ({"mode": "slow", "strategy": "greedy", "beam_width": 2}, "beam_width"),
        ({"mode": "slow", "strategy": "weighted_majority", "wave_size": 2}, "wave_size"),
        ({"mode": "slow", "strategy": "nope"}, "strategy"),
        ({"mode": "slow", "beam": 2}, "beam"),
    ],
)
def test_a_field_of_another_strategy_is_refused_by_name(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SolveParams(question="q", **fields)  # type: ignore[arg-type]
    assert validation_to_error(caught.value).field == field


def test_costs_and_defaults_come_from_each_strategy() -> None:
    beam = SolveParams(question="q", mode="slow")
    assert beam.cost() == 6 and beam.resolved_aggregation == "last" and beam.resolved_candidates == 3
    vote = SolveParams(question="q", mode="slow", strategy="majority", candidates=8, adaptive=True)  # type: ignore[call-arg]
    assert vote.cost() == 8 and vote.resolved_aggregation == "min"
    assert vote.search is not None and vote.search.first_wave == 4  # type: ignore[attr-defined]
    assert SolveParams(question="q").cost() == 1 and SolveParams(question="q", mode="cot").search is None
    # null is unset, as it always was
    assert SolveParams(question="q", mode="slow", strategy="majority", beam_width=None).cost() == 3  # type: ignore[call-arg]
