"""DeepConf's and self-certainty's arithmetic, computed by hand on scripted distributions."""

from __future__ import annotations

import math

import pytest

from service.orchestrator.confidence import (
    borda_weights,
    consensus,
    keep_top,
    online_stop,
    online_threshold,
    percentile,
    token_confidence,
    token_self_certainty,
    trace_confidence,
)


def test_token_confidence_is_minus_the_mean_top_k_logprob() -> None:
    top = [math.log(0.7), math.log(0.2), math.log(0.1)]
    assert token_confidence(top) == pytest.approx(-(math.log(0.7) + math.log(0.2) + math.log(0.1)) / 3)
    assert token_confidence([], sampled=-0.25) == 0.25
    # a peaked distribution is more confident than a flat one
    assert token_confidence([math.log(0.98), math.log(0.01), math.log(0.01)]) > token_confidence([math.log(1 / 3)] * 3)


def test_self_certainty_by_hand_on_a_scripted_distribution() -> None:
    """KL(U || p) over the reported tokens: for p = (0.5, 0.25, 0.25) and U = 1/3 each,
    sum_j 1/3 * log((1/3) / p_j) = 1/3 * (log(2/3) + 2 log(4/3))."""
    p = [0.5, 0.25, 0.25]
    by_hand = (math.log((1 / 3) / 0.5) + 2 * math.log((1 / 3) / 0.25)) / 3
    assert token_self_certainty([math.log(x) for x in p]) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.0566, abs=1e-4)
    assert token_self_certainty([math.log(0.25)] * 4) == pytest.approx(0.0)  # uniform: no certainty
    with pytest.raises(ValueError):
        token_self_certainty([])


def test_trace_confidence_measures() -> None:
    groups = [3.0, 1.0, 2.0, 5.0]
    assert trace_confidence(groups, "lowest") == 1.0
    assert trace_confidence(groups, "tail") == 5.0
    assert trace_confidence(groups, "bottom10") == 1.0  # ceil(10% of 4) = 1 group
    assert trace_confidence(groups, "mean", [1.0, 2.0, 6.0]) == 3.0


def test_percentile_matches_linear_interpolation() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(4.6)  # position 3.6 between 4 and 5
    assert online_threshold(values, eta=10) == pytest.approx(4.6)
    assert online_threshold(values, eta=90) == pytest.approx(1.4)


def test_offline_filter_keeps_the_top_eta_percent() -> None:
    confidences = [0.5, 2.0, 1.0, 2.0, 0.1, 3.0, 0.2, 0.3, 0.4, 0.6]
    assert keep_top(confidences, 10) == [5]
    assert keep_top(confidences, 30) == [1, 3, 5]
    assert keep_top(confidences, 90) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert keep_top([1.0, 1.0], 10) == [0], "at least one, the earlier on a tie"


def test_online_stop_and_consensus() -> None:
    threshold = online_threshold([2.0, 2.5, 3.0, 3.5], eta=90)  # 10th percentile: 2.15
    assert online_stop(2.1, threshold) and not online_stop(2.2, threshold)
    assert consensus({"4": 9.5, "5": 0.5}) == pytest.approx(0.95)
    assert consensus({}) == 0.0


def test_borda_weights_by_rank() -> None:
    weights = borda_weights([0.2, 0.9, 0.5], power=0.5)
    assert weights == pytest.approx([1.0, math.sqrt(3), math.sqrt(2)])
    assert borda_weights([0.2, 0.9, 0.5], power=0.0) == [1.0, 1.0, 1.0]
