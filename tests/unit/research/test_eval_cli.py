"""``atomthink eval`` flags: the subcommand registers, and flags turn into the runs of each table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from research.eval.cli import add_subcommand, load_data, make_plan

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "eval"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="atomthink")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["eval", "--data", str(FIXTURES / "synthetic"), *argv])


def test_candidate_sweep_becomes_scaling_curves() -> None:
    plan = make_plan(_parse("--mode", "slow", "--strategy", "best_of_n", "--candidates", "1,2,4,8"))
    assert [c.key for c in plan.scaling] == [f"slow-best_of_n-min-n{n}" for n in (1, 2, 4, 8)]
    assert plan.strategies == [] and not plan.capabilities


def test_default_run_is_quickthink() -> None:
    args = _parse()
    assert [c.key for c in make_plan(args).runs] == ["quick"] and args.func.__name__ == "run"


def test_modes_and_one_candidate_count_fill_the_strategy_table() -> None:
    plan = make_plan(_parse("--mode", "quick,slow", "--strategy", "beam,majority", "--capabilities"))
    assert [c.key for c in plan.modes] == ["quick", "slow-beam-last-n3-w2", "slow-majority-min-n3"]
    assert [c.key for c in plan.strategies] == ["slow-beam-last-n3-w2", "slow-majority-min-n3"]
    assert plan.capabilities


def test_bad_flags_are_refused() -> None:
    with pytest.raises(SystemExit):
        _parse("--mode", "fast")
    with pytest.raises(SystemExit):
        _parse("--candidates", "0,2")


def test_data_specs_name_their_format() -> None:
    items = load_data(
        [
            str(FIXTURES / "synthetic"),
            f"mathvista={FIXTURES / 'mathvista' / 'testmini.json'}",
            str(FIXTURES / "synthetic"),
        ],
        None,
        2,
    )
    assert [i.dataset for i in items] == [
        "synthetic",
        "synthetic",
        "mathvista",
        "mathvista",
        "synthetic2",
        "synthetic2",
    ]


def test_set_gives_a_field_to_the_strategies_that_take_it() -> None:
    plan = make_plan(_parse("--mode", "slow", "--strategy", "deepconf_online,majority", "--candidates", "16",
                            "--set", "eta=10", "--set", "consensus=0.9"))  # fmt: skip
    online, majority = plan.runs
    assert online.key == "slow-deepconf_online-None-n16-consensus0.9-eta10" and majority.key == "slow-majority-min-n16"
    params = online.params("q", None, seed=1, max_steps=4)
    assert (params.search.eta, params.search.consensus) == (10, 0.9)  # type: ignore[union-attr]
    assert online.as_dict()["fields"] == {"consensus": 0.9, "eta": 10}
    with pytest.raises(SystemExit):
        _parse("--set", "eta")
