"""Worker loops: jobs from *all* requests share the model.

Two modes. On a backend that batches by itself (``EnginePolicyBackend`` / ``EngineStepScorer``: vLLM in process or
behind an OpenAI-compatible server) the worker feeds continuously: up to ``max_inflight`` jobs run at once, each
its own engine request, and a new job is taken as soon as one finishes, so no job waits for another's slowest
candidate. On the transformers backends it runs static batches (one padded model call of up to ``batch_size``
jobs); the queue waits to fill a batch only when more than one job was queued.

A backend whose engine can die under it (``HealthChecked``: vLLM in process) is watched: a probe every
``health_interval_s``, and every job that fails with ``EngineDead``. A dead or hung engine makes the worker unhealthy
at once: it leaves the live set (``/readyz`` drops it), stops reading the stream, hands every job it holds back to
the queue for another worker and returns from ``run`` with ``unhealthy`` set, for its process to exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from atomthink.errors import AtomThinkError, BackendUnavailable, ContextTooLong
from atomthink.protocol import (
    Candidate,
    Job,
    JobError,
    PolicyJob,
    PolicyResult,
    PrmJob,
    PrmResult,
    Result,
    Role,
    failed_result,
)
from atomthink.queue.base import JobSource, process_name
from workers import metrics
from workers.backends.base import (
    EngineDead,
    EnginePolicyBackend,
    EngineStepScorer,
    GenerationRequest,
    HealthChecked,
    PolicyBackend,
    ScoreRequest,
    StepScorer,
    WindowedPolicy,
    WindowedScorer,
)
from workers.image_cache import DecodedImageCache

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0

J = TypeVar("J", PolicyJob, PrmJob)


def make_worker_id(role: Role) -> str:
    return process_name(role)


class _BatchWorker(Generic[J]):
    """The loop shared by both roles; subclasses say how a job becomes a backend request (``prepare``), how requests
    run (``execute``) and how an output becomes a result (``success``)."""

    role: Role

    def __init__(
        self,
        source: JobSource,
        *,
        batch_size: int,
        max_wait_s: float,
        continuous: bool,
        max_inflight: int,
        health: HealthChecked | None = None,
        health_interval_s: float = 5.0,
        probe_timeout_s: float = 30.0,
    ) -> None:
        self.source = source
        self.health = health
        self.health_interval_s = health_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.unhealthy: str | None = None
        """Why the engine is dead (None while healthy): set once, never cleared; the process should exit."""
        self.on_unhealthy: Callable[[str], None] | None = None
        """Called once with the reason when the engine is found dead (the process's probe endpoint)."""
        self._held: dict[str, J] = {}
        """Jobs taken and not yet answered: what an engine failure hands back."""
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.continuous = continuous
        self.max_inflight = max_inflight
        self.worker_id = make_worker_id(self.role)
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        metrics.export_role(self.role)

    def stop(self) -> None:
        """Finish the jobs in flight, then return from ``run`` (SIGTERM drains this way)."""
        self._stopping.set()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        watch = asyncio.create_task(self._watch_engine()) if self.health is not None else None
        metrics.HEALTHY.labels(self.role).set(1)
        backoff_s = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    if self.continuous:
                        await self._feed()
                    else:
                        jobs = await self.source.take(self.role, self.batch_size, self.max_wait_s)
                        self._hold(jobs)
                        if jobs:
                            await self.process(jobs)  # type: ignore[arg-type]
                    backoff_s = 0.1
                except BackendUnavailable as exc:
                    # the queue is down: unacknowledged jobs stay in it and are redelivered once it is back
                    log.warning("%s worker: queue unavailable (%s); retrying in %.1f s", self.role, exc, backoff_s)
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, 5.0)
        finally:
            if self.unhealthy is not None:  # nothing in flight will be answered: cancel it and hand its jobs back
                for task in self._inflight:
                    task.cancel()
            if self._inflight:  # drain: every job taken is answered (or handed back) before the worker leaves
                await asyncio.gather(*self._inflight, return_exceptions=True)
            if self._held:
                await self._hand_back(list(self._held.values()))
            heartbeat.cancel()
            if watch is not None:
                watch.cancel()
            with contextlib.suppress(Exception):
                await self.source.forget_worker(self.role, self.worker_id)

    async def _feed(self) -> None:
        """One turn of continuous feeding: wait for a free slot, then start every job queued (up to the free
        slots) as its own task; ``take`` blocks only until the first job arrives."""
        free = self.max_inflight - len(self._inflight)
        if free <= 0:
            await asyncio.wait(self._inflight, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            return
        jobs = await self.source.take(self.role, free, 0.0)
        self._hold(jobs)
        for job in jobs:
            task = asyncio.create_task(self._process_one(job))  # type: ignore[arg-type]
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        metrics.INFLIGHT_JOBS.labels(self.role).set(len(self._inflight))

    async def _process_one(self, job: J) -> None:
        try:
            await self.process([job], sharing=len(self._inflight))
        except BackendUnavailable:
            # the reply could not be written: the job stays pending in the queue and is redelivered
            log.warning("%s job %s: queue unavailable while replying", self.role, job.job_id, exc_info=True)
        except Exception:
            log.exception("%s job %s failed outside the model call", self.role, job.job_id)
        finally:
            metrics.INFLIGHT_JOBS.labels(self.role).set(max(0, len(self._inflight) - 1))

    def engine_failed(self, reason: str) -> None:
        """Mark the worker unhealthy (once): out of the live set at once, no more jobs taken, ``run`` returns."""
        if self.unhealthy is not None:
            return
        self.unhealthy = reason
        if self.on_unhealthy is not None:
            self.on_unhealthy(reason)
        log.error("%s worker %s: engine dead (%s): leaving, handing its jobs back", self.role, self.worker_id, reason)
        metrics.HEALTHY.labels(self.role).set(0)
        metrics.ENGINE_FAILURES.labels(self.role).inc()
        self._stopping.set()
        task = asyncio.get_running_loop().create_task(self.source.forget_worker(self.role, self.worker_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_engine(self) -> None:
        """Probe the engine every ``health_interval_s``; a failed or late probe marks the worker unhealthy."""
        assert self.health is not None
        while self.unhealthy is None:
            await asyncio.sleep(self.health_interval_s)
            try:
                await asyncio.wait_for(self.health.check_health(), self.probe_timeout_s)
            except TimeoutError:
                self.engine_failed(f"the engine answered no probe within {self.probe_timeout_s:g} s")
            except EngineDead as exc:
                self.engine_failed(str(exc))
            except Exception as exc:  # a probe that fails in any other way is a failure of the engine too
                self.engine_failed(f"probe failed: {type(exc).__name__}: {exc}")

    def _hold(self, jobs: Sequence[Job]) -> None:
        """Note jobs as held from the moment they are taken (a task cancelled before it starts still has its job)."""
        for job in jobs:
            self._held[job.job_id] = job  # type: ignore[assignment]

    async def _hand_back(self, jobs: Sequence[J]) -> None:
        for job in jobs:
            self._held.pop(job.job_id, None)
        try:
            await self.source.release(jobs)
            metrics.JOBS.labels(self.role, "handed_back").inc(len(jobs))
        except Exception:  # the queue is down too: the jobs stay pending and are claimed after the visibility timeout
            log.warning("%s worker: could not hand back %d jobs", self.role, len(jobs), exc_info=True)

    async def _heartbeat(self) -> None:
        while self.unhealthy is None:
            try:
                await self.source.heartbeat(self.role, self.worker_id)
            except Exception:  # a heartbeat must never kill the worker
                log.warning("heartbeat failed", exc_info=True)
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def process(self, jobs: Sequence[J], sharing: int | None = None) -> None:
        """Run ``jobs`` as one model call (static batch) or, continuously fed, one job among ``sharing`` in flight
        (reported as the job's ``batch_size``), and answer each."""
        picked_at = time.time()
        live: list[J] = []
        for job in jobs:
            expired = job.expires_at is not None and picked_at > job.expires_at
            if expired or await self.source.is_cancelled(job.request_id):
                metrics.JOBS.labels(self.role, "expired" if expired else "cancelled").inc()
                await self.source.skip(job)
                self._held.pop(job.job_id, None)
                continue
            metrics.PICKUP_SECONDS.labels(self.role).observe(max(0.0, picked_at - job.enqueued_at))
            live.append(job)
        if not live:
            return
        started = time.perf_counter()
        try:
            results = await self.run_batch(live)
            outcome = "ok"
        except EngineDead as exc:  # not the jobs' fault: another worker answers them
            self.engine_failed(str(exc))
            await self._hand_back(live)
            return
        except AtomThinkError as exc:  # a typed failure of the model call (a remote server down, a rejected call)
            log.error("%s batch of %d jobs failed: %s: %s", self.role, len(live), exc.code, exc)
            error = JobError(code=exc.code, message=str(exc), recoverable=exc.recoverable)
            results = [self.failure(job, error) for job in live]
            outcome = "error"
        except Exception as exc:
            log.exception("%s batch of %d jobs failed", self.role, len(live))
            error = JobError(code="worker_error", message=f"{type(exc).__name__}: {exc}", recoverable=True)
            results = [self.failure(job, error) for job in live]
            outcome = "error"
        compute_ms = (time.perf_counter() - started) * 1000
        metrics.MODEL_CALL_SECONDS.labels(self.role).observe(compute_ms / 1000)
        batch_size = len(live) if sharing is None else sharing
        metrics.BATCH_JOBS.labels(self.role).observe(batch_size)
        answers: list[tuple[Job, Result]] = [
            (
                job,
                result.model_copy(
                    update={
                        "worker_id": self.worker_id,
                        "batch_size": batch_size,
                        "queue_ms": max(0.0, (picked_at - job.enqueued_at) * 1000),
                        "compute_ms": compute_ms,
                    }
                ),
            )
            for job, result in zip(live, results, strict=True)
        ]
        await self.source.reply(answers)
        for job in live:
            self._held.pop(job.job_id, None)
        metrics.JOBS.labels(self.role, outcome).inc(len(answers))

    async def run_batch(self, jobs: Sequence[J]) -> list[Result]:
        """Answer ``jobs``: each is prepared (or refused with a typed error), the runnable ones run together."""
        results: dict[str, Result] = {}
        runnable: list[J] = []
        requests: list[Any] = []
        for job in jobs:
            prepared = await self.prepare(job)
            if isinstance(prepared, JobError):
                results[job.job_id] = self.failure(job, prepared)
            else:
                runnable.append(job)
                requests.append(prepared)
        if requests:
            outputs = await self.execute(runnable, requests)
            for job, output in zip(runnable, outputs, strict=True):
                results[job.job_id] = self.success(job, output)
        return [results[job.job_id] for job in jobs]

    async def prepare(self, job: J) -> Any:
        """The backend request of ``job``, or the ``JobError`` that refuses it."""
        raise NotImplementedError

    async def execute(self, jobs: Sequence[J], requests: Sequence[Any]) -> Sequence[Any]:
        """Run the requests: concurrently on an engine (continuous feeding), else as one model call in a thread."""
        raise NotImplementedError

    def success(self, job: J, output: Any) -> Result:
        raise NotImplementedError

    def failure(self, job: J, error: JobError) -> Result:
        return failed_result(job, error)


class PolicyWorker(_BatchWorker[PolicyJob]):
    role: Role = "policy"

    def __init__(
        self,
        source: JobSource,
        backend: PolicyBackend,
        *,
        batch_size: int,
        max_wait_s: float,
        max_inflight: int = 64,
        continuous: bool | None = None,
        health_interval_s: float = 5.0,
        probe_timeout_s: float = 30.0,
    ) -> None:
        """``continuous``: None feeds an engine backend continuously; False forces static batches."""
        engine = isinstance(backend, EnginePolicyBackend)
        continuous = engine if continuous is None else continuous and engine
        super().__init__(
            source,
            batch_size=batch_size,
            max_wait_s=max_wait_s,
            continuous=continuous,
            max_inflight=max_inflight,
            health=backend if isinstance(backend, HealthChecked) else None,
            health_interval_s=health_interval_s,
            probe_timeout_s=probe_timeout_s,
        )
        self.backend = backend
        self.images = DecodedImageCache(source.get_image)

    async def prepare(self, job: PolicyJob) -> GenerationRequest | JobError:
        if job.prompt_preset is not None and job.prompt_preset != self.backend.preset.name:
            message = (
                f"the gateway searches with prompt preset {job.prompt_preset!r} but this worker serves "
                f"{self.backend.preset.name!r}; set the same ATOMTHINK_PROMPT_PRESET on both"
            )
            return JobError(code="preset_mismatch", message=message, recoverable=False)
        try:
            image = await self.images.get(job.image_id) if job.image_id else None
        except KeyError as exc:
            return JobError(code="image_missing", message=str(exc), recoverable=False)
        request = GenerationRequest(job.kind, job.question, job.steps, image, job.sampling)
        try:
            if isinstance(self.backend, WindowedPolicy):
                request = self.backend.fit(request)  # history grows every step: never a position past the window
        except ContextTooLong as exc:
            return _context_error(self.role, exc)
        return request

    async def execute(
        self, jobs: Sequence[PolicyJob], requests: Sequence[GenerationRequest]
    ) -> Sequence[list[Candidate]]:
        metrics.BATCH_ROWS.labels(self.role).observe(sum(job.sampling.n for job in jobs))
        outputs: Sequence[list[Candidate]]
        if self.continuous and isinstance(self.backend, EnginePolicyBackend):
            engine = self.backend
            outputs = await asyncio.gather(*(engine.agenerate(r) for r in requests))
        else:
            outputs = await asyncio.to_thread(self.backend.generate, requests)
        metrics.GENERATED_TOKENS.inc(sum(c.num_tokens for cands in outputs for c in cands))
        return outputs

    def success(self, job: PolicyJob, output: list[Candidate]) -> Result:
        return PolicyResult(job_id=job.job_id, request_id=job.request_id, candidates=output)


class PrmWorker(_BatchWorker[PrmJob]):
    role: Role = "prm"

    def __init__(
        self,
        source: JobSource,
        scorer: StepScorer,
        *,
        batch_size: int,
        max_wait_s: float,
        max_inflight: int = 64,
        continuous: bool | None = None,
        health_interval_s: float = 5.0,
        probe_timeout_s: float = 30.0,
    ) -> None:
        engine = isinstance(scorer, EngineStepScorer)
        continuous = engine if continuous is None else continuous and engine
        super().__init__(
            source,
            batch_size=batch_size,
            max_wait_s=max_wait_s,
            continuous=continuous,
            max_inflight=max_inflight,
            health=scorer if isinstance(scorer, HealthChecked) else None,
            health_interval_s=health_interval_s,
            probe_timeout_s=probe_timeout_s,
        )
        self.scorer = scorer

    async def prepare(self, job: PrmJob) -> ScoreRequest | JobError:
        request = ScoreRequest(job.question, job.paths, job.known_scores)
        try:
            if isinstance(self.scorer, WindowedScorer):
                self.scorer.fit(request)
        except ContextTooLong as exc:
            return _context_error(self.role, exc)
        return request

    async def execute(self, jobs: Sequence[PrmJob], requests: Sequence[ScoreRequest]) -> Sequence[list[list[float]]]:
        metrics.BATCH_ROWS.labels(self.role).observe(sum(len(job.paths) for job in jobs))
        if self.continuous and isinstance(self.scorer, EngineStepScorer):
            engine = self.scorer
            return await asyncio.gather(*(engine.ascore(r) for r in requests))
        return await asyncio.to_thread(self.scorer.score, requests)

    def success(self, job: PrmJob, output: list[list[float]]) -> Result:
        return PrmResult(job_id=job.job_id, request_id=job.request_id, scores=output)


def _context_error(role: Role, exc: ContextTooLong) -> JobError:
    """A job that cannot fit the model's window: a typed, non-recoverable failure (no retry, no redelivery)."""
    metrics.CONTEXT_REFUSALS.labels(role).inc()
    return JobError(code=exc.code, message=exc.message, recoverable=False)
