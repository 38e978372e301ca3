"""Search strategies on a scripted tree: a policy and PRM whose every answer is known in advance."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from service.orchestrator.tree import SearchTree, aggregate
from tests.unit.service import flat_config as strategies
from tests.unit.service.flat_config import SearchConfig
from tests.unit.service.scripted import FINAL, ScriptedExpander


def make_expander(script: dict[tuple[str, ...], list[str]], scores: dict[str, float] | None = None) -> ScriptedExpander:
    """The scripted policy and PRM; a step's token count is its length in characters (the budget tests count on it)."""
    return ScriptedExpander(script, scores, tokens=len)


def test_aggregations() -> None:
    scores = [0.9, 0.2, 0.5]
    assert aggregate(scores, "min") == 0.2
    assert aggregate(scores, "last") == 0.5
    assert aggregate(scores, "mean") == pytest.approx(1.6 / 3)
    assert aggregate(scores, "prod") == pytest.approx(0.09)


async def test_beam_keeps_global_top_k_across_beams_and_stops_on_final() -> None:
    # Depth 1: a1 > b1 > c1. Depth 2: both children of a1 beat both children of b1 (top-2 across beams,
    # not the best child per beam). Depth 3: a1/a2 yields a final step that is kept: the search stops there.
    script = {
        (): ["a1", "b1", "c1"],
        ("a1",): ["a2", "a3", "a4"],
        ("b1",): ["b2", "b3", "b4"],
        ("a1", "a2"): [FINAL + "5", "a5", "a6"],
        ("a1", "a3"): ["a7", "a8", "a9"],
    }
    scores = {"a1": 0.9, "b1": 0.8, "c1": 0.1, "a2": 0.95, "a3": 0.85, "a4": 0.2, "b2": 0.7, "b3": 0.6,
              "b4": 0.5, FINAL + "5": 0.99, "a5": 0.3, "a6": 0.3, "a7": 0.4, "a8": 0.4, "a9": 0.4}  # fmt: skip
    expander = make_expander(script, scores)
    tree = SearchTree()
    outcome = await strategies.beam(expander, tree, SearchConfig(candidates=3, beam_width=2, aggregation="last"))

    assert outcome.final and outcome.answer == "5"
    assert outcome.leaf.steps() == ["a1", "a2", FINAL + "5"]
    # depth 2 expanded exactly the two kept beams a1 and b1, depth 3 only the kept a2 and a3 (not b2)
    states = [call[0] for call in expander.calls]
    assert states == [(), ("a1",), ("b1",), ("a1", "a2"), ("a1", "a3")]
    # all candidates of one depth are scored in one PRM call
    assert [len(call) for call in expander.score_calls] == [3, 6, 6]
    assert all(call[1] == 3 for call in expander.calls)
    # every call but the first hands the PRM the scores each path's kept parent already has
    assert expander.known_calls[0] == [[], [], []]
    assert expander.known_calls[1] == [[0.9]] * 3 + [[0.8]] * 3
    assert expander.known_calls[2] == [[0.9, 0.95]] * 3 + [[0.9, 0.85]] * 3


async def test_beam_ranks_by_aggregated_path_score() -> None:
    # With "min", the path through the shaky x1 (0.3) loses to y1 even though x2 is the best single step.
    script = {(): ["x1", "y1"], ("x1",): [FINAL + "1"], ("y1",): [FINAL + "2"]}
    scores = {"x1": 0.3, "y1": 0.6, FINAL + "1": 0.99, FINAL + "2": 0.7}
    config = SearchConfig(candidates=2, beam_width=2, aggregation="min")
    first = (await strategies.beam(make_expander(script, scores), SearchTree(), config)).answer
    assert first == "2"
    config_last = SearchConfig(candidates=2, beam_width=2, aggregation="last")
    assert (await strategies.beam(make_expander(script, scores), SearchTree(), config_last)).answer == "1"


async def test_greedy_follows_the_best_child() -> None:
    script = {
        (): ["p", "q", "r"],
        ("q",): ["q1", "q2", "q3"],
        ("q", "q3"): [FINAL + "42", "no", "nope"],
    }
    scores = {"p": 0.2, "q": 0.8, "r": 0.5, "q1": 0.1, "q2": 0.3, "q3": 0.9, FINAL + "42": 0.9, "no": 0.2,
              "nope": 0.1}  # fmt: skip
    expander = make_expander(script, scores)
    outcome = await strategies.beam(expander, SearchTree(), SearchConfig(candidates=3, beam_width=1))
    assert outcome.leaf.steps() == ["q", "q3", FINAL + "42"]
    assert outcome.answer == "42"
    assert [call[0] for call in expander.calls] == [(), ("q",), ("q", "q3")]


async def test_beam_returns_best_path_when_budget_runs_out() -> None:
    script = {(): ["s1", "s2"], ("s1",): ["t1", "t2"], ("s2",): ["u1", "u2"]}
    scores = {"s1": 0.6, "s2": 0.5, "t1": 0.7, "t2": 0.9, "u1": 0.1, "u2": 0.2}
    expander = make_expander(script, scores)
    tree = SearchTree()
    outcome = await strategies.beam(expander, tree, SearchConfig(candidates=2, beam_width=2, max_steps=2))
    assert not outcome.final
    assert outcome.leaf.steps() == ["s1", "t2"]
    assert expander.calls[-1][2] == "final"  # asked once for a direct answer
    assert outcome.answer == "fallback"


# Paths for best-of-N, built so that each aggregation picks a different one:
#   A: .95 .30 .95  min .30  last .95  mean .733  prod .271
#   B: .60 .60 .60  min .60  last .60  mean .600  prod .216
#   D: .55 .90 .90  min .55  last .90  mean .783  prod .446
#   E: .50          min .50  last .50  mean .500  prod .500
BEST_OF_N_SCRIPT = {
    (): ["A1", "B1", "D1", FINAL + "E"],
    ("A1",): ["A2"],
    ("A1", "A2"): [FINAL + "A"],
    ("B1",): ["B2"],
    ("B1", "B2"): [FINAL + "B"],
    ("D1",): ["D2"],
    ("D1", "D2"): [FINAL + "D"],
}
BEST_OF_N_SCORES = {"A1": 0.95, "A2": 0.30, FINAL + "A": 0.95, "B1": 0.6, "B2": 0.6, FINAL + "B": 0.6,
                    "D1": 0.55, "D2": 0.9, FINAL + "D": 0.9, FINAL + "E": 0.5}  # fmt: skip


@pytest.mark.parametrize(("aggregation", "expected"), [("min", "B"), ("last", "A"), ("mean", "D"), ("prod", "E")])
async def test_best_of_n_picks_the_best_path_under_each_aggregation(aggregation: str, expected: str) -> None:
    expander = make_expander(BEST_OF_N_SCRIPT, BEST_OF_N_SCORES)
    config = SearchConfig(candidates=4, aggregation=aggregation)  # type: ignore[arg-type]
    outcome = await strategies.best_of_n(expander, SearchTree(), config)
    assert outcome.answer == expected
    assert expander.calls[0][:4] == ((), 4, "step", 0.7)  # all N first steps in one batched call
    assert len(expander.score_calls) == 1 and len(expander.score_calls[0]) == 4  # every path in one PRM call


async def test_majority_returns_the_most_common_answer() -> None:
    script = {
        (): ["m1", "m2", "m3", "m4"],
        ("m1",): [FINAL + "5"],
        ("m2",): [FINAL + "5"],
        ("m3",): [FINAL + "7"],
        ("m4",): [FINAL + "5"],
    }
    scores = {"m1": 0.2, "m2": 0.3, "m3": 0.99, "m4": 0.1, FINAL + "5": 0.2, FINAL + "7": 0.99}
    outcome = await strategies.majority(make_expander(script, scores), SearchTree(), SearchConfig(candidates=4))
    assert outcome.answer == "5"
    assert outcome.votes == {"5": 3, "7": 1}


async def test_majority_makes_no_prm_call_and_gives_ties_to_the_first_sampled_answer() -> None:
    # OpenR's vote (reason/reranking/vote_utils.py): max(counts, key=counts.get) over answers in sampling order.
    script = {(): ["m1", "m2"], ("m1",): [FINAL + "5"], ("m2",): [FINAL + "7"]}
    scores = {"m1": 0.4, "m2": 0.6, FINAL + "5": 0.9, FINAL + "7": 0.9}
    expander = make_expander(script, scores)
    outcome = await strategies.majority(expander, SearchTree(), SearchConfig(candidates=2, aggregation="min"))
    assert outcome.answer == "5"
    assert expander.score_calls == []
    assert outcome.leaf.path_scores is None


async def test_majority_with_prm_tie_break_gives_ties_to_the_best_scored_path() -> None:
    script = {(): ["m1", "m2"], ("m1",): [FINAL + "5"], ("m2",): [FINAL + "7"]}
    scores = {"m1": 0.4, "m2": 0.6, FINAL + "5": 0.9, FINAL + "7": 0.9}
    expander = make_expander(script, scores)
    config = SearchConfig(candidates=2, aggregation="min", tie_break="prm")
    outcome = await strategies.majority(expander, SearchTree(), config)
    assert outcome.answer == "7"
    assert len(expander.score_calls) == 1


async def test_official_beam_starts_from_beam_width_empty_rollouts_and_keeps_invalid_candidates() -> None:
    # beam_start="beams": depth 1 expands the root once per beam (2 x 3 samples). "b1" is a near copy of nothing
    # but repeats itself (invalid under the official rules) and still wins on score, as in the official code.
    from atomthink.steps import ATOMTHINK_V2_RULES

    repeated = "Bar A is 3. Bar A is 3."
    script = {
        (): ["a1 is here.", repeated, "c1 is here."],
        (repeated,): [FINAL + "4"],
        ("a1 is here.",): [FINAL + "9"],
    }
    scores = {"a1 is here.": 0.5, repeated: 0.9, "c1 is here.": 0.1, FINAL + "4": 0.8, FINAL + "9": 0.7}
    expander = make_expander(script, scores)
    tree = SearchTree(rules=ATOMTHINK_V2_RULES)
    config = SearchConfig(candidates=3, beam_width=2, beam_start="beams", keep_invalid=True)
    outcome = await strategies.beam(expander, tree, config)
    assert [call[:2] for call in expander.calls[:2]] == [((), 3), ((), 3)]
    assert [len(call) for call in expander.score_calls[:1]] == [6]
    assert outcome.leaf.steps() == [repeated, FINAL + "4"] and outcome.answer == "4"


async def test_tiny_beam_drops_invalid_candidates() -> None:
    repeated = "Bar A is 3. Bar A is 3."
    script = {(): ["a1 is here.", repeated, "c1 is here."], ("a1 is here.",): [FINAL + "9"]}
    scores = {"a1 is here.": 0.5, repeated: 0.9, "c1 is here.": 0.1, FINAL + "9": 0.7}
    expander = make_expander(script, scores)
    outcome = await strategies.beam(expander, SearchTree(), SearchConfig(candidates=3, beam_width=1))
    assert outcome.leaf.steps() == ["a1 is here.", FINAL + "9"]
    assert expander.score_calls[0] == [["a1 is here."], ["c1 is here."]]


def test_temperature_ramp_follows_the_official_loop() -> None:
    # v2 atomthink_slow.py: temperature += 0.5 after each candidate, then clamped to 1.0.
    assert strategies.ramp_temperatures(SearchConfig(temperature=0.2, temperature_ramp=0.5), 3) == [0.2, 0.7, 1.0]
    assert strategies.ramp_temperatures(SearchConfig(temperature=1.3, temperature_ramp=0.5), 3) == [1.3, 1.0, 1.0]
    assert strategies.ramp_temperatures(SearchConfig(temperature=0.7), 2) == [0.7, 0.7]


async def test_ramped_beam_asks_one_call_per_temperature() -> None:
    script = {(): ["a1 is here."], ("a1 is here.",): [FINAL + "9"]}
    scores = {"a1 is here.": 0.5, FINAL + "9": 0.7}
    expander = make_expander(script, scores)
    config = SearchConfig(temperature=0.2, temperature_ramp=0.5, candidates=3, beam_width=1)
    await strategies.beam(expander, SearchTree(), config)
    assert [(call[1], call[3]) for call in expander.calls[:3]] == [(1, 0.2), (1, 0.7), (1, 1.0)]


async def test_beam_stops_at_the_sampling_budget_and_falls_back() -> None:
    script = {(): ["a1 is here."], ("a1 is here.",): ["a2 is here."], ("a1 is here.", "a2 is here."): ["a3 x."]}
    scores = {"a1 is here.": 0.5, "a2 is here.": 0.5, "a3 x.": 0.5}
    expander = make_expander(script, scores)
    config = SearchConfig(candidates=2, beam_width=1, max_samples=3)
    outcome = await strategies.beam(expander, SearchTree(), config)
    # depth 1 draws 2, depth 2 draws 2 (4 >= 3): no depth 3; the fallback prompt is asked once
    assert [call[0] for call in expander.calls] == [(), ("a1 is here.",), ("a1 is here.", "a2 is here.")]
    assert expander.calls[-1][2] == "final" and not outcome.final


async def test_weighted_majority_outvotes_a_larger_low_scored_answer() -> None:
    # three paths say 5 with min scores 0.2, 0.3, 0.1 (total 0.6); two say 7 with 0.9 and 0.8 (total 1.7)
    script = {
        (): ["m1", "m2", "m3", "m4", "m5"],
        **{(f"m{i}",): [FINAL + "5"] for i in (1, 2, 4)},
        **{(f"m{i}",): [FINAL + "7"] for i in (3, 5)},
    }
    scores = {"m1": 0.2, "m2": 0.3, "m3": 0.9, "m4": 0.1, "m5": 0.8, FINAL + "5": 0.95, FINAL + "7": 0.95}
    config = SearchConfig(candidates=5, aggregation="min")
    plain = await strategies.majority(make_expander(script, scores), SearchTree(), config)
    weighted = await strategies.weighted_majority(make_expander(script, scores), SearchTree(), config)
    assert plain.answer == "5"
    assert weighted.answer == "7" and weighted.final
    assert weighted.leaf.steps() == ["m3", FINAL + "7"]  # the best-scored path of the winning answer
    assert weighted.votes == {"5": 3, "7": 2}
    assert weighted.vote_weights == pytest.approx({"5": 0.6, "7": 1.7})


async def test_weighted_majority_falls_back_when_no_path_finishes() -> None:
    script = {(): ["a"], ("a",): ["b"], ("a", "b"): ["c"]}
    expander = make_expander(script, {"a": 0.5, "b": 0.5, "c": 0.5})
    outcome = await strategies.weighted_majority(expander, SearchTree(), SearchConfig(candidates=1, max_steps=3))
    assert not outcome.final and outcome.answer == "fallback"
    assert expander.calls[-1][2] == "final"


async def test_quick_resamples_invalid_steps_with_rising_temperature() -> None:
    script = {
        (): ["", "step one", "x"],  # empty first: resampled
        ("step one",): ["step one", "step two"],  # near copy of the previous step: resampled
        ("step one", "step two"): [FINAL + "9"],
    }
    expander = make_expander(script)
    tree = SearchTree()
    config = SearchConfig(temperature=0.5, retry_temperature_step=0.1, max_retries=3)
    outcome = await strategies.quick(expander, tree, config)
    assert outcome.answer == "9" and outcome.final
    assert outcome.leaf.steps() == ["step one", "step two", FINAL + "9"]
    temperatures = [call[3] for call in expander.calls]
    assert temperatures == pytest.approx([0.5, 0.6, 0.5, 0.6, 0.5])
    assert all(call[1] == 1 for call in expander.calls)
    rejected = [node.invalid for node in tree.nodes if node.invalid]
    assert rejected == ["empty", "near copy of the previous step"]


async def test_quick_bounds_resampling_and_asks_for_an_answer_after_max_steps() -> None:
    script = {(): [""], ("",): [""]}
    expander = make_expander(script)
    outcome = await strategies.quick(expander, SearchTree(), SearchConfig(max_steps=2, max_retries=2))
    kinds = [call[2] for call in expander.calls]
    assert kinds == ["step"] * 6 + ["final"]  # 2 steps x (1 + 2 resamples), then one direct answer
    assert not outcome.final and outcome.answer == "fallback"


# --- adaptive votes, pruning, token budgets -------------------------------------------------------------------


def _vote_script(answers: Sequence[str]) -> dict[tuple[str, ...], list[str]]:
    """Path i is ``v{i}`` then the final step with ``answers[i]``: paths are handed out in this order."""
    script: dict[tuple[str, ...], list[str]] = {(): [f"v{i}" for i in range(len(answers))]}
    for i, answer in enumerate(answers):
        script[(f"v{i}",)] = [FINAL + answer]
    return script


def _prefix_decisions(answers: Sequence[str], config: SearchConfig, *, weighted: bool = False) -> list[str | None]:
    return [
        strategies.vote_stop(answers[:k], [1.0] * k, k, config, weighted=weighted) for k in range(1, len(answers) + 1)
    ]


def test_vote_stop_says_safe_exactly_when_no_remaining_path_can_change_the_winner() -> None:
    # ceiling 6, certainty rule off: after 5,7,5,5 the 5s lead by 2 with 2 paths left; a 2-2 finish would tie
    # and a tie goes to the earlier answer (5), so the leader is safe then and not one path earlier.
    config = SearchConfig(candidates=6, min_candidates=1, stop_votes=99)
    assert _prefix_decisions(["5", "7", "5", "5", "5", "5"], config) == [None, None, None, "safe", "safe", "ceiling"]
    # with ties to the best-scored path (tie_break="prm") a tie is not safe: one more path is needed
    prm = SearchConfig(candidates=6, min_candidates=1, stop_votes=99, tie_break="prm")
    assert _prefix_decisions(["5", "7", "5", "5", "5", "5"], prm) == [None, None, None, None, "safe", "ceiling"]
    # a 7 sampled first wins a 7-5 tie, so 5 is not safe at 3-1 with 2 left
    assert _prefix_decisions(["7", "5", "5", "5", "5", "5"], config)[3] is None
    # nothing stops before min_candidates, even a lead no path can overturn
    late = SearchConfig(candidates=4, min_candidates=4, stop_votes=99)
    assert _prefix_decisions(["5", "5", "5", "5"], late) == [None, None, None, "ceiling"]


def test_weighted_vote_stop_counts_each_remaining_path_as_weight_one() -> None:
    config = SearchConfig(candidates=5, min_candidates=1, stop_votes=99)
    answers, weights = ["5", "7", "5"], [0.9, 0.5, 0.9]  # 5 leads by 1.3
    assert strategies.vote_stop(answers, weights, 3, config, weighted=True) is None  # 2 paths could add 2.0 to 7
    assert strategies.vote_stop([*answers, "5"], [*weights, 0.2], 4, config, weighted=True) == "safe"  # 1.5 > 1
    tie = SearchConfig(candidates=4, min_candidates=1, stop_votes=99)
    assert strategies.vote_stop(["5", "5", "7"], [1.0, 1.0, 1.0], 3, tie, weighted=True) is None  # a tie is not safe


def test_vote_stop_certainty_rule_needs_both_the_paths_and_the_share() -> None:
    config = SearchConfig(candidates=16, min_candidates=4, stop_votes=3, stop_share=0.75)
    assert strategies.vote_stop(["5", "5", "7", "5"], [1.0] * 4, 4, config, weighted=False) == "certain"
    assert strategies.vote_stop(["5", "5", "5"], [1.0] * 3, 3, config, weighted=False) is None  # before m = 4
    assert strategies.vote_stop(["5", "7", "5", "9"], [1.0] * 4, 4, config, weighted=False) is None  # 2 paths
    six = ["5", "7", "5", "9", "5", "5"]
    assert strategies.vote_stop(six, [1.0] * 6, 6, config, weighted=False) is None  # 4 of 6 < 0.75
    # weighted: the leader's share of the weight, not of the paths
    answers, low = ["5", "5", "5", "7"], [0.2, 0.2, 0.2, 0.9]
    assert strategies.vote_stop(answers, low, 4, config, weighted=True) is None  # 0.6 of 1.5
    assert strategies.vote_stop(answers, [0.9, 0.9, 0.9, 0.2], 4, config, weighted=True) == "certain"


async def test_adaptive_majority_samples_in_waves_and_stops_when_the_leader_is_safe() -> None:
    expander = make_expander(_vote_script(["5", "7", "5", "5", "5", "5"]))
    config = SearchConfig(candidates=6, adaptive=True, min_candidates=2, wave_size=1, stop_votes=99)
    outcome = await strategies.majority(expander, SearchTree(), config)
    assert outcome.answer == "5" and outcome.stop_reason == "safe" and outcome.paths == 4
    first_steps = [call[1] for call in expander.calls if call[0] == ()]
    assert first_steps == [2, 1, 1]  # a wave of min_candidates, then waves of wave_size
    assert outcome.votes == {"5": 3, "7": 1} and expander.score_calls == []  # still no PRM call
    assert outcome.steps_saved == pytest.approx(2 * 2)  # 2 paths never sampled, 2 steps each


async def test_adaptive_majority_runs_to_the_ceiling_when_the_vote_stays_open() -> None:
    expander = make_expander(_vote_script(["5", "7", "5", "7", "9", "5"]))
    config = SearchConfig(candidates=6, adaptive=True, min_candidates=2, wave_size=2)
    outcome = await strategies.majority(expander, SearchTree(), config)
    assert outcome.stop_reason == "ceiling" and outcome.paths == 6 and outcome.answer == "5"
    assert outcome.votes == {"5": 3, "7": 2, "9": 1} and outcome.steps_saved == 0


async def test_adaptive_weighted_majority_stops_on_certainty_and_scores_each_wave_once() -> None:
    answers = ["5", "5", "7", "5", "7", "7", "7", "7"]
    scores = {f"v{i}": 0.9 for i in range(8)} | {FINAL + "5": 0.9, FINAL + "7": 0.3}
    expander = make_expander(_vote_script(answers), scores)
    config = SearchConfig(candidates=8, adaptive=True, min_candidates=4, stop_votes=3, stop_share=0.75)
    outcome = await strategies.weighted_majority(expander, SearchTree(), config)
    # 5 holds 3 paths and 2.7 of 3.0 after the first wave of 4: the 7s sampled later are never drawn
    assert outcome.stop_reason == "certain" and outcome.paths == 4 and outcome.answer == "5"
    assert [len(call) for call in expander.score_calls] == [4]
    assert outcome.vote_weights == pytest.approx({"5": 2.7, "7": 0.3})


def test_prune_choice_stops_the_lowest_scored_fraction() -> None:
    partial = [[0.9], [0.2], [0.8], [0.1], [0.5]]
    assert strategies.prune_choice(partial, 0.5, "min") == [1, 3]  # floor(2.5) = 2 lowest
    assert strategies.prune_choice(partial, 0.0, "min") == []
    assert strategies.prune_choice([[0.4], [0.4], [0.4]], 0.34, "min") == [2]  # a tie: the later sample goes
    assert strategies.prune_choice([[0.9, 0.4], [0.3, 0.5]], 0.5, "last") == [0]  # by the aggregation asked
    assert strategies.prune_choice([[0.9, 0.4], [0.3, 0.5]], 0.5, "min") == [1]


# Four paths: a and c are good and finish at step 3; b and d look bad after one step.
PRUNE_SCRIPT = {
    (): ["a1", "b1", "c1", "d1"],
    ("a1",): ["a2"],
    ("b1",): ["b2"],
    ("c1",): ["c2"],
    ("d1",): ["d2"],
    ("a1", "a2"): [FINAL + "A"],
    ("b1", "b2"): [FINAL + "B"],
    ("c1", "c2"): [FINAL + "C"],
    ("d1", "d2"): [FINAL + "D"],
}
PRUNE_SCORES = {"a1": 0.9, "b1": 0.2, "c1": 0.8, "d1": 0.1, "a2": 0.9, "b2": 0.99, "c2": 0.7, "d2": 0.99,
                FINAL + "A": 0.6, FINAL + "B": 0.99, FINAL + "C": 0.9, FINAL + "D": 0.99}  # fmt: skip


async def test_pruned_best_of_n_stops_the_lowest_scored_paths_and_never_extends_them() -> None:
    expander = make_expander(PRUNE_SCRIPT, PRUNE_SCORES)
    config = SearchConfig(candidates=4, aggregation="min", prune_fraction=0.5, prune_interval=1)
    outcome = await strategies.best_of_n(expander, SearchTree(), config)
    states = [call[0] for call in expander.calls]
    assert ("b1",) not in states and ("d1",) not in states  # pruned after the first step
    # check after 1 step: all 4 open, the 2 lowest go; after 2 steps: a and c, 1 goes (c, min 0.7 < 0.9)
    assert [len(call) for call in expander.score_calls] == [4, 2, 1]
    assert ("c1", "c2") not in states
    assert outcome.pruned == 3 and outcome.paths == 4
    assert outcome.answer == "A" and outcome.leaf.steps() == ["a1", "a2", FINAL + "A"]
    # without pruning every path runs to its end and C (min 0.7) beats A (min 0.6): pruning trades that for calls
    full = make_expander(PRUNE_SCRIPT, PRUNE_SCORES)
    plain = await strategies.best_of_n(full, SearchTree(), SearchConfig(candidates=4, aggregation="min"))
    assert plain.answer == "C" and plain.pruned == 0 and len(full.calls) == 1 + 4 + 4


async def test_pruning_waits_for_its_interval() -> None:
    expander = make_expander(PRUNE_SCRIPT, PRUNE_SCORES)
    config = SearchConfig(candidates=4, aggregation="min", prune_fraction=0.5, prune_interval=2)
    outcome = await strategies.best_of_n(expander, SearchTree(), config)
    # one check after 2 steps (min scores a .9, b .2, c .7, d .1): b and d go before their third step
    assert [len(call) for call in expander.score_calls] == [4, 2]
    assert [call[0] for call in expander.calls if len(call[0]) == 2] == [("a1", "a2"), ("c1", "c2")]
    assert outcome.pruned == 2 and outcome.answer == "C"


CHAIN = {(): ["s1 go", "s1 alt"], ("s1 go",): ["s2 go"], ("s1 alt",): ["s2 alt"],
         ("s1 go", "s2 go"): ["s3 go"], ("s1 alt", "s2 alt"): ["s3 alt"],
         ("s1 go", "s2 go", "s3 go"): [FINAL + "1"], ("s1 alt", "s2 alt", "s3 alt"): [FINAL + "2"]}  # fmt: skip
CHAIN_SCORES = {text: 0.5 for options in CHAIN.values() for text in options}


@pytest.mark.parametrize(
    ("run", "config", "best"),
    [
        (strategies.quick, SearchConfig(), ["s1 go", "s2 go"]),
        (strategies.beam, SearchConfig(candidates=2, beam_width=1), ["s1 go"]),
        (strategies.best_of_n, SearchConfig(candidates=2), ["s1 go"]),
        (strategies.majority, SearchConfig(candidates=2), ["s1 go"]),
        (strategies.weighted_majority, SearchConfig(candidates=2), ["s1 go"]),
        (strategies.majority, SearchConfig(candidates=4, adaptive=True, min_candidates=2), ["s1 go"]),
        (strategies.best_of_n, SearchConfig(candidates=2, prune_fraction=0.5, prune_interval=1), ["s1 go"]),
    ],
    ids=["quick", "beam", "best_of_n", "majority", "weighted", "adaptive", "pruned"],
)
async def test_token_budget_truncates_every_strategy_with_its_best_path(
    run: strategies.SearchStrategy, config: SearchConfig, best: list[str]
) -> None:
    # every step is 5 or 6 tokens (num_tokens = len(text)): a budget of 10 is spent after two one-path calls or
    # one two-path call; the best path so far is the one the strategy marked (the first path, nothing scored better)
    inner = make_expander(CHAIN, CHAIN_SCORES)
    budget = strategies.TokenBudget(inner, 10)
    tree = SearchTree()
    outcome, truncated = await strategies.within_budget(run(budget, tree, config), tree, config)
    assert truncated and not outcome.final and outcome.answer is None
    assert outcome.leaf is tree.best and outcome.leaf.steps() == best
    assert all(len(call[0]) < 2 for call in inner.calls)  # no call after the budget was spent
    assert budget.spent >= 10


async def test_a_budget_that_suffices_changes_nothing() -> None:
    tree = SearchTree()
    config = SearchConfig(candidates=2)
    search = strategies.majority(strategies.TokenBudget(make_expander(CHAIN), 1000), tree, config)
    outcome, truncated = await strategies.within_budget(search, tree, config)
    assert not truncated and outcome.final and outcome.answer == "1" and outcome.votes == {"1": 1, "2": 1}
