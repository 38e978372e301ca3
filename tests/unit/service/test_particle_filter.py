"""Particle filtering on scripted trees: its_hub's weighting, resampling and selection, through the strategy."""

from __future__ import annotations

from collections import Counter

import pytest

from service.events import StrategyEvent
from service.orchestrator.strategies import particle_filter
from service.orchestrator.strategies.base import SearchContext
from service.orchestrator.strategies.particle_filter import ParticleFilterParams, ParticlesEvent
from service.orchestrator.tree import SearchTree
from tests.unit.service.scripted import FINAL, ScriptedExpander

SCRIPT = {
    (): ["a", "b", "c", "d"],
    ("a",): [FINAL + "1"],
    ("b",): [FINAL + "2"],
    ("c",): [FINAL + "3"],
    ("d",): [FINAL + "4"],
}
SCORES = {"a": 0.8, "b": 0.5, "c": 0.5, "d": 0.2, FINAL + "1": 0.9, FINAL + "2": 0.6, FINAL + "3": 0.3,
          FINAL + "4": 0.99}  # fmt: skip


def _events(sink: list[object]) -> list[ParticlesEvent]:
    return [e for e in sink if isinstance(e, ParticlesEvent)]


async def test_first_resampling_draws_particles_in_proportion_to_their_weights() -> None:
    """Scores 0.8, 0.5, 0.5, 0.2 give log-weights ln 4, 0, 0, -ln 4, so probabilities 4 : 1 : 1 : 1/4 (0.64, 0.16,
    0.16, 0.04). Over 1,500 seeded searches of 4 particles the first draw lands within 2.5 points of them."""
    counts: Counter[str] = Counter()
    runs = 1500
    for seed in range(runs):
        sink: list[object] = []
        tree = SearchTree(sink=sink.append)
        await particle_filter.search(
            ScriptedExpander(SCRIPT, SCORES), tree, SearchContext(seed=seed), ParticleFilterParams()
        )
        first = _events(sink)[0]
        assert [w.weight for w in first.weights] == pytest.approx([0.64, 0.16, 0.16, 0.04], abs=1e-6)
        text = {n.id: n.text for n in tree.nodes}
        counts.update(text[i] for i in first.drawn)
    total = runs * 4
    for step, share in {"a": 0.64, "b": 0.16, "c": 0.16, "d": 0.04}.items():
        assert counts[step] / total == pytest.approx(share, abs=0.025)


async def test_particles_on_one_node_share_a_call_and_argmax_picks_the_answer() -> None:
    expander = ScriptedExpander(SCRIPT, SCORES)
    sink: list[StrategyEvent | object] = []
    tree = SearchTree(sink=sink.append)
    params = ParticleFilterParams(candidates=4, resampling="systematic")
    outcome = await particle_filter.search(expander, tree, SearchContext(seed=1), params)
    # round 1: one call of 4 samples at the root; round 2: one call per distinct node the draw kept
    assert expander.calls[0] == ((), 4, "step", 0.7, None)  # the context's temperature, no log-probabilities
    second_round = expander.calls[1:]
    drawn = _events(sink)[0].drawn
    text = {n.id: n.text for n in tree.nodes}
    assert sorted((c[0][0], c[1]) for c in second_round) == sorted(Counter(text[i] for i in drawn).items())
    # every particle is final after round 2; the answer is the largest weight among the drawn ones
    last = _events(sink)[-1]
    assert len(_events(sink)) == 2
    survivors = {text[i] for i in last.drawn}
    best = max(survivors, key=SCORES.__getitem__)
    assert outcome.final and outcome.answer == best.removeprefix(FINAL)


async def test_stopped_particles_keep_their_weight_and_are_not_extended() -> None:
    """A particle that reached a final step is resampled with its last weight but never extended again."""
    script = {(): [FINAL + "9", "g"], ("g",): ["h"], ("g", "h"): [FINAL + "7"]}
    scores = {FINAL + "9": 0.9, "g": 0.5, "h": 0.5, FINAL + "7": 0.5}
    for seed in range(20):
        expander = ScriptedExpander(script, scores)
        sink: list[object] = []
        tree = SearchTree(sink=sink.append)
        outcome = await particle_filter.search(
            expander, tree, SearchContext(seed=seed), ParticleFilterParams(candidates=2)
        )
        assert all(not call[0] or call[0][0] != FINAL + "9" for call in expander.calls)
        final_nine = next(n.id for n in tree.nodes if n.text == FINAL + "9")
        for event in _events(sink)[1:]:
            weights = {w.id: w.weight for w in event.weights}
            if final_nine in weights:  # its weight is still logit(0.9) against the others' current ones
                assert weights[final_nine] >= 0.5
        assert outcome.final and outcome.answer in {"9", "7"}


def test_params_limits() -> None:
    with pytest.raises(ValueError):
        ParticleFilterParams(weight_temperature=0)
    with pytest.raises(ValueError):
        ParticleFilterParams(resampling="stratified")  # type: ignore[arg-type]
