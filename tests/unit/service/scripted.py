"""A scripted policy and PRM for the strategy unit tests: every continuation, score and token log-probability is
known in advance (a test double of the expander, for unit tests of the algorithms only)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from atomthink.protocol import Candidate, PromptKind

FINAL = "To sum up, the final answer is: "


def peaked(p: float, k: int = 4, tokens: int = 3) -> list[list[float]]:
    """``tokens`` positions whose top-k distribution is ``p`` on the first token and the rest spread evenly."""
    rest = (1 - p) / (k - 1)
    return [[math.log(p)] + [math.log(rest)] * (k - 1) for _ in range(tokens)]


class Call(NamedTuple):
    """One ``propose`` call as the expander saw it."""

    state: tuple[str, ...]
    n: int
    kind: PromptKind
    temperature: float | None
    logprobs: int | None


class ScriptedExpander:
    """``script[state]`` lists the continuations of a state, handed out in order (cycling); ``scores[step]`` is the
    PRM score of a step; ``logprobs[step]`` its tokens' top log-probabilities (default: a flat four-way split).
    A continuation's token count is ``tokens(text)`` (default: its log-probability positions, 3 unless scripted)."""

    def __init__(
        self,
        script: dict[tuple[str, ...], list[str]],
        scores: dict[str, float] | None = None,
        logprobs: dict[str, list[list[float]]] | None = None,
        *,
        tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.script = script
        self.scores = scores or {}
        self.logprobs = logprobs or {}
        self.tokens = tokens
        self.cursor: dict[tuple[str, ...], int] = defaultdict(int)
        self.calls: list[Call] = []
        self.score_calls: list[list[list[str]]] = []
        self.known_calls: list[list[list[float]]] = []

    async def propose(
        self,
        steps: Sequence[str],
        n: int,
        *,
        kind: PromptKind = "step",
        temperature: float | None = None,
        logprobs: int | None = None,
    ) -> list[Candidate]:
        state = tuple(steps)
        self.calls.append(Call(state, n, kind, temperature, logprobs))
        if kind == "final":
            return [Candidate(text="fallback", num_tokens=1, finish_reason="eos")]
        options = self.script[state]
        out = []
        for _ in range(n):
            text = options[self.cursor[state] % len(options)]
            self.cursor[state] += 1
            tops = self.logprobs.get(text, peaked(0.25))
            extra = {}
            if logprobs is not None:
                extra = {"token_logprobs": [top[0] for top in tops], "top_logprobs": [top[:logprobs] for top in tops]}
            count = self.tokens(text) if self.tokens is not None else len(tops)
            out.append(Candidate(text=text, num_tokens=count, finish_reason="delimiter", **extra))
        return out

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        self.score_calls.append([list(p) for p in paths])
        self.known_calls.append([list(k) for k in known])
        return [[self.scores[s] for s in path] for path in paths]
