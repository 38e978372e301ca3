"""Two small interfaces: what the orchestrator needs from the queue, and what a worker needs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, overload

from atomthink.errors import JobTimeout
from atomthink.protocol import Job, PolicyJob, PolicyResult, PrmJob, PrmResult, Result, Role, role_of

R = TypeVar("R", bound=Result)


def process_name(role: Role, instance: str | None = None) -> str:
    """``role-host-pid-instance``: how a process is named in the queue (a worker's heartbeat entry, a Redis consumer),
    so that the live workers and the pending jobs say which host and process they are. ``instance`` (random unless
    given) tells apart two queue clients or workers in one process."""
    return f"{role}-{socket.gethostname()}-{os.getpid()}-{instance or uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class QueueStats:
    """Jobs of one role: waiting for a worker, and delivered to a worker but not yet answered."""

    waiting: int
    pending: int


class PendingReplies:
    """The gateway side's futures: one per submitted job, resolved when its result arrives."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Result]] = {}

    async def submit(self, job: Job, enqueue: Callable[[], Awaitable[None]], timeout_s: float) -> Result:
        """Register the job, run ``enqueue`` and wait for the result; raises ``JobTimeout`` after ``timeout_s``."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._futures[job.job_id] = future
        try:
            await enqueue()
            try:
                return await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                raise JobTimeout(f"no {role_of(job)} worker answered within {timeout_s:.0f} s") from None
        finally:
            self._futures.pop(job.job_id, None)

    def resolve(self, result: Result) -> None:
        """Hand a result to its waiting caller; results nobody waits for (late duplicates) are dropped."""
        future = self._futures.get(result.job_id)
        if future is not None and not future.done():
            future.set_result(result)


def image_id_for(data: bytes) -> str:
    """Images travel once per request, stored under their content hash."""
    return hashlib.sha256(data).hexdigest()


class JobClient(Protocol):
    """The gateway side: submit a job and wait for its result."""

    @overload
    async def call(self, job: PolicyJob, timeout_s: float) -> PolicyResult: ...
    @overload
    async def call(self, job: PrmJob, timeout_s: float) -> PrmResult: ...
    async def call(self, job: Job, timeout_s: float) -> Result:
        """Enqueue ``job`` and return its result; raises ``JobTimeout`` or ``BackendUnavailable``."""
        ...

    async def cancel(self, request_id: str) -> None:
        """Drop the request's queued jobs; workers skip them."""
        ...

    async def put_image(self, data: bytes) -> str:
        """Store encoded image bytes under their content hash (idempotent); returns the id."""
        ...

    async def workers_alive(self) -> dict[Role, int]:
        """How many workers of each role are alive."""
        ...

    async def queue_stats(self) -> dict[Role, QueueStats]:
        """Queue depth per role, for metrics."""
        ...


class JobSource(Protocol):
    """The worker side: take a batch of jobs, answer each."""

    async def take(self, role: Role, max_jobs: int, max_wait_s: float) -> list[Job]:
        """Up to ``max_jobs`` jobs of ``role``: waits for the first, takes what else is queued, and, when that was
        more than the first alone (there is load to batch with), waits up to ``max_wait_s`` to fill the batch.

        Returns an empty list when nothing came within the poll interval (so callers can check for shutdown).
        """
        ...

    async def reply(self, answers: Sequence[tuple[Job, Result]]) -> None:
        """Deliver each result to its job's requester, and only then acknowledge the jobs."""
        ...

    async def skip(self, job: Job) -> None:
        """Acknowledge a job without answering it (its request was cancelled)."""
        ...

    async def release(self, jobs: Sequence[Job]) -> None:
        """Hand taken, unanswered jobs back to the queue at once, for another worker (this one's engine died); a job
        handed back more than the queue's delivery limit fails its request with a typed error instead."""
        ...

    async def is_cancelled(self, request_id: str) -> bool: ...

    async def get_image(self, image_id: str) -> bytes:
        """Encoded bytes of an image stored by ``put_image``; raises ``KeyError`` when it expired."""
        ...

    async def heartbeat(self, role: Role, worker_id: str) -> None:
        """Tell the gateways this worker is alive."""
        ...

    async def forget_worker(self, role: Role, worker_id: str) -> None:
        """Leave the live set at once (a clean stop)."""
        ...
