"""The frontier table: runs grouped, only the problems every run solved, Wilson intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.frontier import load, markdown, plot, points, wilson


def _row(run: str, strategy: str, n: int, item: str, correct: bool, tokens: int) -> dict[str, object]:
    return {"run": run, "strategy": strategy, "candidates": n, "beam_width": None, "id": item, "correct": correct,
            "generated_tokens": tokens, "prompt_tokens": 10, "paths": n, "prm_calls": 0, "error": None}  # fmt: skip


def test_points_compare_the_same_problems(tmp_path: Path) -> None:
    rows = [
        _row("a4", "majority", 4, "p1", True, 100),
        _row("a4", "majority", 4, "p2", False, 300),
        _row("a4", "majority", 4, "p3", True, 999),  # only this run solved p3: left out
        _row("d4", "deepconf", 4, "p1", True, 50),
        _row("d4", "deepconf", 4, "p2", True, 70),
    ]
    (tmp_path / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    [deepconf, majority] = points(load([tmp_path]))
    assert (majority.items, majority.accuracy, majority.tokens) == (2, 0.5, 200.0)
    assert (deepconf.accuracy, deepconf.tokens) == (1.0, 60.0)
    assert "| majority | 4 | 2 | 50.0 (" in markdown([deepconf, majority])
    assert plot([deepconf, majority], tmp_path / "f.png").stat().st_size > 0


def test_wilson_interval() -> None:
    low, high = wilson(8, 10)
    assert (low, high) == pytest.approx((0.490, 0.943), abs=1e-3)
    assert wilson(0, 0) == (0.0, 0.0)


def test_curves_name_adaptive_runs_and_aggregations_where_a_strategy_has_several() -> None:
    rows = [
        {**_row("b-min", "best_of_n", 4, "p1", True, 10), "aggregation": "min"},
        {**_row("b-last", "best_of_n", 4, "p1", True, 10), "aggregation": "last"},
        {**_row("m", "majority", 8, "p1", True, 10), "aggregation": "min", "adaptive": True},
        {**_row("p", "best_of_n", 8, "p1", True, 10), "aggregation": "min", "prune_fraction": 0.5},
        {**_row("q", None, 1, "p1", True, 10), "mode": "quick", "candidates": None},  # type: ignore[arg-type]
    ]
    names = {p.strategy: p.candidates for p in points(rows)}
    assert names == {"best_of_n min": 4, "best_of_n last": 4, "majority adaptive": 8, "best_of_n pruned 0.5 min": 8,
                     "quick": 1}  # fmt: skip
