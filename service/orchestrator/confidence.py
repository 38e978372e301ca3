"""Confidence from the policy's own token log-probabilities: DeepConf and self-certainty, as pure functions.

DeepConf (Fu et al., "Deep Think with Confidence", arXiv 2508.15260):

* token confidence ``C_i = -(1/k) * sum_j log P_i(j)`` over the ``k`` most likely tokens at position ``i`` (high when
  the distribution is peaked: the top tokens other than the first are then very unlikely);
* group confidence: the mean token confidence over a window of tokens. The paper slides a 2048-token window; this
  service's window is one atomic step (``docs/strategies.md`` says why), so a path's groups are its steps;
* a trace's confidence: its lowest group confidence (``lowest``, the paper's online measure), the mean of its
  lowest 10% groups (``bottom10``), its last group's (``tail``), or the mean over all its tokens (``mean``);
* offline: keep the top ``eta`` percent of traces by confidence, then a vote in which each trace weighs its
  confidence;
* online: a warm-up wave sets the threshold, the ``100 - eta`` percentile of the warm-up traces' confidences; a
  later trace stops as soon as a group falls below it; sampling stops once the leader holds a ``consensus`` share of
  the confidence-weighted vote.

Self-certainty (Kang et al., "Scalable Best-of-N Selection for Large Language Models via Self-Certainty", arXiv
2502.18581): per token the KL divergence of the uniform distribution from the model's, ``-(1/V) sum_j log(V p_j)``,
averaged over the answer's tokens; best-of-N picks the most self-certain path, and Borda voting gives the path of
rank ``r`` (1 = most certain) of ``N`` the weight ``(N - r + 1) ** p``. Engines report only the top ``k`` of the
vocabulary (vLLM at most 20), so the sum runs over those ``k`` (``V = k``): ``-log k - mean_j log p_j``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

TraceMeasure = Literal["lowest", "bottom10", "tail", "mean"]


def token_confidence(top_logprobs: Sequence[float], sampled: float | None = None) -> float:
    """DeepConf's token confidence: minus the mean of the top-k log-probabilities (the sampled token's alone when
    no top ones were reported, ``k = 0``)."""
    if top_logprobs:
        return -sum(top_logprobs) / len(top_logprobs)
    if sampled is None:
        raise ValueError("no log-probabilities at this position")
    return -sampled


def token_self_certainty(top_logprobs: Sequence[float]) -> float:
    """Self-certainty of one position over the ``k`` reported tokens: ``KL(U_k || p) = -log k - mean log p_j``."""
    if not top_logprobs:
        raise ValueError("self-certainty needs top log-probabilities (logprobs >= 1)")
    k = len(top_logprobs)
    return -math.log(k) - sum(top_logprobs) / k


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of nothing")
    return sum(values) / len(values)


def trace_confidence(groups: Sequence[float], measure: TraceMeasure, token_confidences: Sequence[float] = ()) -> float:
    """A trace's confidence from its group confidences (one per step here), or from all its tokens' (``mean``)."""
    if measure == "mean":
        return mean(token_confidences)
    if not groups:
        raise ValueError("a trace without groups has no confidence")
    if measure == "lowest":
        return min(groups)
    if measure == "tail":
        return groups[-1]
    lowest = sorted(groups)[: max(1, math.ceil(0.1 * len(groups)))]
    return mean(lowest)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between order statistics (numpy's default rule)."""
    if not values:
        raise ValueError("percentile of nothing")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def online_threshold(warmup: Sequence[float], eta: float) -> float:
    """DeepConf online's stop threshold: the ``100 - eta`` percentile of the warm-up traces' confidences (``eta``
    = 10 keeps about the top 10%, DeepConf-low; ``eta`` = 90 keeps about 90%, DeepConf-high)."""
    return percentile(warmup, 100.0 - eta)


def keep_top(confidences: Sequence[float], eta: float) -> list[int]:
    """DeepConf offline's filter: indices (in their order) of the ``ceil(eta% * n)`` most confident traces, at least
    one; on a tie the earlier trace is kept."""
    n = len(confidences)
    keep = max(1, math.ceil(eta / 100.0 * n - 1e-9)) if n else 0
    order = sorted(range(n), key=lambda i: (-confidences[i], i))
    return sorted(order[:keep])


def consensus(totals: dict[str, float]) -> float:
    """The leader's share of a weighted vote (0 when nothing was cast)."""
    cast = sum(totals.values())
    return max(totals.values()) / cast if totals and cast > 0 else 0.0


def online_stop(group: float, threshold: float) -> bool:
    """Whether a trace stops: a group confidence strictly below the warm-up threshold."""
    return group < threshold


def borda_weights(certainties: Sequence[float], power: float) -> list[float]:
    """Borda weights of paths ranked by self-certainty: rank ``r`` (1 = most certain; ties by sampling order) of
    ``N`` weighs ``(N - r + 1) ** power``; ``power`` 0 is a plain vote."""
    n = len(certainties)
    order = sorted(range(n), key=lambda i: (-certainties[i], i))
    weights = [0.0] * n
    for rank, index in enumerate(order, start=1):
        weights[index] = float(n - rank + 1) ** power
    return weights
