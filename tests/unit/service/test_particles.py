"""Particle filtering's arithmetic against its_hub's rules (``particle_gibbs.py``), on scripted weights."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from service.orchestrator.particles import log_weight, probabilities, resample, select


def test_log_weight_is_the_clipped_logit_of_the_score() -> None:
    assert log_weight(0.5) == 0.0
    assert log_weight(0.8) == pytest.approx(math.log(4.0))
    assert log_weight(1.0) == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert log_weight(0.0) == pytest.approx(-math.log((1 - 1e-7) / 1e-7))
    with pytest.raises(ValueError):
        log_weight(1.5)


def test_probabilities_are_the_softmax_of_log_weights_over_temperature() -> None:
    # scores 0.8 and 0.5: log-weights log 4 and 0, so weights 4:1
    probs = probabilities([log_weight(0.8), log_weight(0.5)])
    assert probs == pytest.approx([0.8, 0.2])
    hotter = probabilities([log_weight(0.8), log_weight(0.5)], temperature=2.0)
    assert hotter == pytest.approx([2 / 3, 1 / 3])  # 4 ** 0.5 : 1
    assert probabilities([1000.0, 0.0]) == pytest.approx([1.0, 0.0])  # shifted: no overflow


@pytest.mark.parametrize("rule", ["multinomial", "systematic"])
def test_resampling_counts_are_proportional_to_the_weights(rule: str) -> None:
    """A seeded check of the counts: 40,000 draws of four particles weighted 0.1, 0.2, 0.3, 0.4 land within 1.5
    percentage points of their weights (multinomial: ~9 standard deviations; systematic is far tighter)."""
    probs = [0.1, 0.2, 0.3, 0.4]
    rng = random.Random(1234)
    counts: Counter[int] = Counter()
    rounds, n = 10_000, 4
    for _ in range(rounds):
        counts.update(resample(probs, n, rule, rng))  # type: ignore[arg-type]
    total = rounds * n
    for index, p in enumerate(probs):
        assert counts[index] / total == pytest.approx(p, abs=0.015)


def test_systematic_resampling_gives_each_particle_floor_or_ceil_of_its_share() -> None:
    """Systematic resampling's defining property: particle i is drawn floor(N p_i) or ceil(N p_i) times."""
    rng = random.Random(7)
    probs = [0.05, 0.45, 0.125, 0.375]
    for _ in range(200):
        counts = Counter(resample(probs, 8, "systematic", rng))
        for index, p in enumerate(probs):
            assert math.floor(8 * p) <= counts[index] <= math.ceil(8 * p)


def test_a_zero_score_particle_is_practically_never_drawn() -> None:
    rng = random.Random(0)
    probs = probabilities([log_weight(0.0), log_weight(0.9)])
    assert probs[0] < 2e-8  # clipped, so tiny but not zero (its_hub clips too)
    for rule in ("multinomial", "systematic"):
        assert set(resample(probs, 1000, rule, rng)) == {1}  # type: ignore[arg-type]


def test_selection_argmax_takes_the_first_best_and_sample_follows_weights() -> None:
    rng = random.Random(3)
    assert select([0.1, 2.0, 2.0, -1.0], "argmax", rng) == 1
    picks = Counter(select([math.log(3.0), 0.0], "sample", rng) for _ in range(4000))
    assert picks[0] / 4000 == pytest.approx(0.75, abs=0.03)
