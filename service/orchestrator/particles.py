"""Particle filtering's arithmetic: weights from PRM scores, resampling, and the final pick.

The rules are its_hub 1.2.0's (``its_hub/core/algorithms/particle_gibbs.py``, ``ParticleFiltering`` = particle Gibbs
with one iteration; Puri et al., "A Probabilistic Inference Approach to Inference-Time Scaling of LLMs using
Particle-Based Monte Carlo Methods", arXiv 2502.01618), re-implemented here from their description:

* a particle's log-weight is the logit (inverse sigmoid) of the PRM score of its path so far, the score clipped to
  ``[1e-7, 1 - 1e-7]``;
* the resampling probabilities are the softmax of the log-weights (divided by a temperature: its_hub anneals it,
  the plain particle filter keeps 1);
* every step, ``N`` particles are drawn with replacement, multinomially (``random.choices``) or systematically
  (one uniform offset, ``N`` evenly spaced positions on the cumulative weights);
* the answer is the particle with the largest log-weight (``argmax``, the first on a tie, as ``np.argmax``) or one
  drawn by the probabilities (``sample``).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from typing import Literal

ResamplingRule = Literal["multinomial", "systematic"]
SelectionRule = Literal["argmax", "sample"]

SCORE_CLIP = 1e-7
"""Scores are clipped to ``[SCORE_CLIP, 1 - SCORE_CLIP]`` before the logit (its_hub's ``_inv_sigmoid``)."""


def log_weight(score: float) -> float:
    """A particle's log-weight: the logit of its PRM score (a probability in ``[0, 1]``)."""
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"a PRM score is a probability, got {score}")
    clipped = min(max(score, SCORE_CLIP), 1.0 - SCORE_CLIP)
    return math.log(clipped / (1.0 - clipped))


def probabilities(log_weights: Sequence[float], temperature: float = 1.0) -> list[float]:
    """The resampling probabilities: ``softmax(log_weights / temperature)`` (shifted by the maximum)."""
    if not log_weights:
        raise ValueError("no particles")
    if temperature <= 0:
        raise ValueError(f"the weights' temperature must be positive, got {temperature}")
    scaled = [w / temperature for w in log_weights]
    top = max(scaled)
    exps = [math.exp(w - top) for w in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def resample(probs: Sequence[float], n: int, rule: ResamplingRule, rng: random.Random) -> list[int]:
    """Indices of the ``n`` particles drawn with replacement by ``probs`` (multinomial or systematic)."""
    if rule == "multinomial":
        return rng.choices(range(len(probs)), weights=probs, k=n)
    offset = rng.uniform(0.0, 1.0)
    cumulative: list[float] = []
    running = 0.0
    for p in probs:
        running += p
        cumulative.append(running)
    cumulative[-1] = max(cumulative[-1], 1.0)  # rounding must not leave the last position unmatched
    positions = [(i + offset) / n for i in range(n)]
    return [min(bisect.bisect_right(cumulative, position), len(probs) - 1) for position in positions]


def select(log_weights: Sequence[float], rule: SelectionRule, rng: random.Random, temperature: float = 1.0) -> int:
    """The particle whose path is the answer: the largest log-weight (first on a tie) or one drawn by weight."""
    if rule == "argmax":
        top = max(log_weights)
        return next(i for i, w in enumerate(log_weights) if w == top)
    return rng.choices(range(len(log_weights)), weights=probabilities(log_weights, temperature), k=1)[0]
