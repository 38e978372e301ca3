"""DeepConf offline and online, and self-certainty best-of-N and vote, on scripted paths with scripted token
distributions (no PRM call anywhere)."""

from __future__ import annotations

import math

import pytest

from service.orchestrator.confidence import token_confidence, token_self_certainty
from service.orchestrator.strategies import deepconf, deepconf_online, self_certainty, self_certainty_vote
from service.orchestrator.strategies.base import SearchContext
from service.orchestrator.strategies.confident_paths import ConfidenceEvent
from service.orchestrator.strategies.deepconf import DeepConfParams
from service.orchestrator.strategies.deepconf_online import DeepConfOnlineParams
from service.orchestrator.strategies.self_certainty import SelfCertaintyParams
from service.orchestrator.strategies.self_certainty_vote import SelfCertaintyVoteParams
from service.orchestrator.tree import SearchTree
from tests.unit.service.scripted import FINAL, ScriptedExpander, peaked

CONTEXT = SearchContext(top_logprobs=4)


def conf(p: float) -> float:
    """Token (and step) confidence of ``peaked(p)``."""
    return token_confidence(peaked(p)[0])


async def test_offline_keeps_the_most_confident_and_weights_the_vote() -> None:
    # five one-step paths: three say 1 with low confidence, two say 2 with high confidence
    script = {(): [FINAL + "1", FINAL + "1 ", FINAL + "1  ", FINAL + "2", FINAL + "2 "]}
    logprobs = {FINAL + "1": peaked(0.4), FINAL + "1 ": peaked(0.45), FINAL + "1  ": peaked(0.5),
                FINAL + "2": peaked(0.95), FINAL + "2 ": peaked(0.9)}  # fmt: skip
    expander = ScriptedExpander(script, logprobs=logprobs)
    top = await deepconf.search(expander, SearchTree(), CONTEXT, DeepConfParams(candidates=5, eta=40))
    assert top.answer == "2" and top.votes == {"2": 2}
    assert top.vote_weights == pytest.approx({"2": conf(0.95) + conf(0.9)}, abs=1e-5)
    assert expander.score_calls == [] and all(call.logprobs == 4 for call in expander.calls)
    everyone = await deepconf.search(
        ScriptedExpander(script, logprobs=logprobs), SearchTree(), CONTEXT, DeepConfParams(candidates=5, eta=100)
    )
    weights = {"1": conf(0.4) + conf(0.45) + conf(0.5), "2": conf(0.95) + conf(0.9)}
    assert everyone.vote_weights == pytest.approx(weights, abs=1e-5)
    assert everyone.answer == max(weights, key=weights.__getitem__)


async def test_trace_confidence_is_the_lowest_step_by_default() -> None:
    script = {(): ["s"], ("s",): [FINAL + "3"]}
    logprobs = {"s": peaked(0.3), FINAL + "3": peaked(0.99)}
    sink: list[object] = []
    await deepconf.search(ScriptedExpander(script, logprobs=logprobs), SearchTree(sink=sink.append), CONTEXT,
                          DeepConfParams(candidates=1))  # fmt: skip
    reported = [n.confidence for e in sink if isinstance(e, ConfidenceEvent) for n in e.nodes]
    assert reported == pytest.approx([conf(0.3), conf(0.99)], abs=1e-5)


async def test_online_stops_paths_below_the_warmup_threshold() -> None:
    """Warm-up: three paths of step confidence conf(0.9), conf(0.8), conf(0.6); eta = 90 puts the threshold at their
    10th percentile. A later path whose first step is below it stops there (never extended, no vote); one above it
    goes on and votes."""
    script = {
        (): [FINAL + "1", FINAL + "2", FINAL + "1 ", "low", "high"],
        ("low",): [FINAL + "9"],
        ("high",): [FINAL + "2"],
    }
    logprobs = {FINAL + "1": peaked(0.9), FINAL + "2": peaked(0.8), FINAL + "1 ": peaked(0.6), "low": peaked(0.3),
                "high": peaked(0.7)}  # fmt: skip
    expander = ScriptedExpander(script, logprobs=logprobs)
    sink: list[object] = []
    params = DeepConfOnlineParams(candidates=5, warmup=3, wave_size=2, eta=90, consensus=0.95)
    outcome = await deepconf_online.search(expander, SearchTree(sink=sink.append), CONTEXT, params)
    threshold = conf(0.6) + 0.2 * (conf(0.8) - conf(0.6))
    events = [e for e in sink if isinstance(e, ConfidenceEvent)]
    assert [e.threshold for e in events if e.threshold is not None][0] == pytest.approx(threshold)
    assert conf(0.3) < threshold < conf(0.7)
    stopped = [i for e in events for i in e.stopped]
    assert len(stopped) == 1 and outcome.pruned == 1
    assert ("low",) not in [call[0] for call in expander.calls], "the stopped path is never extended"
    assert ("high",) in [call[0] for call in expander.calls]
    # the warm-up's conf(0.6) path is below the threshold and does not vote
    assert outcome.votes == {"2": 2, "1": 1}
    assert outcome.vote_weights == pytest.approx({"2": conf(0.8) + conf(0.7), "1": conf(0.9)}, abs=1e-5)
    assert outcome.answer == "2" and outcome.paths == 5 and outcome.stop_reason == "ceiling"


async def test_online_stops_sampling_on_consensus() -> None:
    script = {(): [FINAL + "4"] * 3 + [FINAL + "5"] * 13}
    expander = ScriptedExpander(script, logprobs={FINAL + "4": peaked(0.9)})
    params = DeepConfOnlineParams(candidates=16, warmup=3, eta=90, consensus=0.95)
    outcome = await deepconf_online.search(expander, SearchTree(), CONTEXT, params)
    assert outcome.stop_reason == "certain" and outcome.paths == 3
    assert outcome.answer == "4"
    assert sum(call[1] for call in expander.calls) == 3, "no path after the warm-up"


def test_online_params() -> None:
    with pytest.raises(ValueError, match="warmup"):
        DeepConfOnlineParams(candidates=4, warmup=5)


async def test_self_certainty_best_of_n_picks_the_most_certain_path() -> None:
    script = {(): [FINAL + "1", FINAL + "2", FINAL + "3"]}
    logprobs = {FINAL + "1": peaked(0.5), FINAL + "2": peaked(0.97), FINAL + "3": peaked(0.3)}
    outcome = await self_certainty.search(
        ScriptedExpander(script, logprobs=logprobs), SearchTree(), CONTEXT, SelfCertaintyParams(candidates=3)
    )
    assert outcome.answer == "2"
    # by hand: p = (0.97, 0.01, 0.01, 0.01), k = 4: -log 4 - (log 0.97 + 3 log 0.01) / 4
    by_hand = -math.log(4) - (math.log(0.97) + 3 * math.log(0.01)) / 4
    assert token_self_certainty(peaked(0.97)[0]) == pytest.approx(by_hand)


async def test_self_certainty_vote_is_a_borda_count() -> None:
    # ranks by certainty: "2"(0.95) 1st, "1"(0.9) 2nd, "1"(0.8) 3rd, "2"(0.4) 4th; N = 4, p = 1:
    # "2": 4 + 1 = 5, "1": 3 + 2 = 5 -> a tie goes to the most certain ballot's answer, "2"; p = 2: "2" 17, "1" 13
    script = {(): [FINAL + "1", FINAL + "2", FINAL + "1 ", FINAL + "2 "]}
    logprobs = {FINAL + "1": peaked(0.9), FINAL + "2": peaked(0.95), FINAL + "1 ": peaked(0.8),
                FINAL + "2 ": peaked(0.4)}  # fmt: skip
    for power, weights in ((1.0, {"2": 5.0, "1": 5.0}), (2.0, {"2": 17.0, "1": 13.0}), (0.0, {"2": 2.0, "1": 2.0})):
        outcome = await self_certainty_vote.search(
            ScriptedExpander(script, logprobs=logprobs),
            SearchTree(),
            CONTEXT,
            SelfCertaintyVoteParams(candidates=4, borda_power=power),
        )
        assert outcome.vote_weights == pytest.approx(weights)
        assert outcome.answer == "2"
