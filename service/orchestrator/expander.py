"""The step expander the strategies use, implemented over the job queue, with per-request accounting."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

from atomthink.errors import ContextTooLong, JobFailed
from atomthink.prompts import SamplingDefaults
from atomthink.protocol import (
    Candidate,
    PolicyJob,
    PolicyResult,
    PrmJob,
    PrmResult,
    PromptKind,
    Result,
    SamplingParams,
    role_of,
)
from atomthink.queue.base import JobClient
from service import metrics


@dataclass
class _BusyClock:
    """Wall time during which at least one call was outstanding (concurrent calls are not double counted)."""

    active: int = 0
    since: float = 0.0
    total_s: float = 0.0

    def enter(self) -> None:
        if self.active == 0:
            self.since = time.perf_counter()
        self.active += 1

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.total_s += time.perf_counter() - self.since


@dataclass
class ExpansionStats:
    policy_calls: int = 0
    prm_calls: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    """Prompt tokens the policy read: each policy job's prompt once (its ``n`` candidates share it), as OpenAI's
    ``usage.prompt_tokens`` counts a request with ``n`` choices."""
    queue_s: float = 0.0
    queue_waits: list[tuple[float, float]] = field(default_factory=list)
    """Each job's wait in the queue as a (start, end) interval on ``time.perf_counter``: sent, then picked up."""
    policy_clock: _BusyClock = field(default_factory=_BusyClock)
    prm_clock: _BusyClock = field(default_factory=_BusyClock)


def union_s(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``intervals`` (waits of jobs sent side by side count once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


@dataclass(frozen=True, kw_only=True)
class RequestSampling(SamplingDefaults):
    """One request's sampling: the model family's defaults (``SamplingDefaults``) as the request and the settings
    resolved them, and the token budgets of a step and of an answer."""

    max_step_tokens: int
    max_answer_tokens: int


class QueueExpander:
    """Turns strategy calls into policy and PRM jobs for one request.

    Every job gets the next seed of a sequence derived from the request seed, in the order the strategy asks,
    so a seeded request replays exactly.
    """

    def __init__(
        self,
        client: JobClient,
        *,
        request_id: str,
        question: str,
        image_id: str | None,
        sampling: RequestSampling,
        seed: int,
        job_timeout_s: float,
        prompt_preset: str | None = None,
        merge_duplicate_paths: bool = True,
    ) -> None:
        self.client = client
        self.request_id = request_id
        self.question = question
        self.image_id = image_id
        self.sampling = sampling
        self.seed = seed
        self.job_timeout_s = job_timeout_s
        self.prompt_preset = prompt_preset
        self.merge_duplicate_paths = merge_duplicate_paths
        """Score each distinct path once per PRM job (siblings often repeat a step); the scores are the same."""
        self.stats = ExpansionStats()
        self._jobs = 0

    def _next_seed(self) -> int:
        self._jobs += 1
        return (self.seed * 1_000_003 + self._jobs) % (2**31 - 1)

    @overload
    async def _call(self, job: PolicyJob, clock: _BusyClock) -> PolicyResult: ...
    @overload
    async def _call(self, job: PrmJob, clock: _BusyClock) -> PrmResult: ...
    async def _call(self, job: PolicyJob | PrmJob, clock: _BusyClock) -> Result:
        """Run one job through the queue, timed and accounted; a worker's typed failure becomes ``JobFailed``."""
        role = role_of(job)
        job = job.model_copy(update={"expires_at": time.time() + self.job_timeout_s})
        clock.enter()
        started = time.perf_counter()
        try:
            result: Result = await self.client.call(job, self.job_timeout_s)
        finally:
            clock.leave()
        metrics.JOB_LATENCY.labels(role).observe(time.perf_counter() - started)
        metrics.QUEUE_WAIT.labels(role).observe(result.queue_ms / 1000)
        metrics.JOB_BATCH_SIZE.labels(role).observe(result.batch_size)
        self.stats.queue_s += result.queue_ms / 1000
        self.stats.queue_waits.append((started, started + result.queue_ms / 1000))
        if result.error is not None and result.error.code == ContextTooLong.code:
            raise ContextTooLong(result.error.message, field="question")
        if result.error is not None:
            raise JobFailed(f"{result.error.code}: {result.error.message}")
        return result

    async def propose(
        self,
        steps: Sequence[str],
        n: int,
        *,
        kind: PromptKind = "step",
        temperature: float | None = None,
        logprobs: int | None = None,
    ) -> list[Candidate]:
        """``n`` candidates of one state (one policy job); with ``logprobs``, each carries its tokens' top-``logprobs``
        log-probabilities."""
        params = SamplingParams(
            n=n,
            temperature=self.sampling.temperature if temperature is None else temperature,
            top_p=self.sampling.top_p,
            top_k=self.sampling.top_k,
            max_new_tokens=self.sampling.max_answer_tokens
            if kind in ("direct", "cot")
            else self.sampling.max_step_tokens,
            min_new_tokens=min(self.sampling.max_step_tokens, self.sampling.max_answer_tokens)
            if kind in ("direct", "cot", "final")
            else None,
            seed=self._next_seed(),
            logprobs=logprobs,
        )
        job = PolicyJob(
            request_id=self.request_id,
            kind=kind,
            question=self.question,
            image_id=self.image_id,
            steps=list(steps),
            sampling=params,
            prompt_preset=self.prompt_preset,
        )
        self.stats.policy_calls += 1
        result = await self._call(job, self.stats.policy_clock)
        if len(result.candidates) != n:
            raise JobFailed(f"policy worker returned {len(result.candidates)} candidates for n={n}")
        self.stats.generated_tokens += sum(c.num_tokens for c in result.candidates)
        self.stats.prompt_tokens += result.candidates[0].prompt_tokens if result.candidates else 0
        return result.candidates

    async def score(self, paths: Sequence[Sequence[str]], known: Sequence[Sequence[float]] = ()) -> list[list[float]]:
        """Per path, per step scores: one PRM job, each distinct path in it once (a PRM's score of a step depends only
        on the question and the steps up to it, so identical paths get identical scores)."""
        order: dict[tuple[str, ...], int] = {}
        slots = [order.setdefault(tuple(p), len(order)) if self.merge_duplicate_paths else i for i, p in
                 enumerate(paths)]  # fmt: skip
        unique = [list(p) for p in order] if self.merge_duplicate_paths else [list(p) for p in paths]
        first = {slot: i for i, slot in reversed(list(enumerate(slots)))}
        known_scores = [list(known[first[j]]) for j in range(len(unique))] if any(known) else []
        metrics.PRM_PATHS_MERGED.inc(len(paths) - len(unique))
        job = PrmJob(request_id=self.request_id, question=self.question, paths=unique, known_scores=known_scores)
        self.stats.prm_calls += 1
        result = await self._call(job, self.stats.prm_clock)
        if [len(s) for s in result.scores] != [len(p) for p in unique]:
            raise JobFailed("PRM worker returned scores that do not match the paths")
        return [list(result.scores[slot]) for slot in slots]
