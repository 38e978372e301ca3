"""In-process step queue: the embedded default (gateway and workers in one process, one event loop)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from atomthink.errors import Overloaded
from atomthink.protocol import Job, JobError, Result, Role, failed_result, role_of
from atomthink.queue.base import PendingReplies, QueueStats, image_id_for
from atomthink.settings import default

POLL_INTERVAL_S = 0.5


class InMemoryStepQueue:
    """Satisfies both ``JobClient`` and ``JobSource`` with asyncio queues and futures.

    Bounded everywhere: at most ``max_queued`` waiting jobs per role and ``max_images`` stored images (LRU).
    """

    def __init__(
        self,
        *,
        max_queued: int = default("max_queue_length"),
        max_images: int = 256,
        heartbeat_ttl_s: float = default("heartbeat_ttl_s"),
    ) -> None:
        self._queues: dict[Role, asyncio.Queue[Job]] = {
            "policy": asyncio.Queue(max_queued),
            "prm": asyncio.Queue(max_queued),
        }
        self._pending = PendingReplies()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._max_images = max_images
        self._heartbeats: dict[tuple[Role, str], float] = {}
        self._heartbeat_ttl_s = heartbeat_ttl_s

    async def close(self) -> None:
        """Nothing to release in memory."""

    # --- gateway side -----------------------------------------------------------------------------
    async def call(self, job: Job, timeout_s: float) -> Any:
        queue = self._queues[role_of(job)]

        async def enqueue() -> None:
            try:
                queue.put_nowait(job)
            except asyncio.QueueFull:
                raise Overloaded(f"the {role_of(job)} queue holds {queue.maxsize} jobs", retry_after_s=2) from None

        return await self._pending.submit(job, enqueue, timeout_s)

    async def cancel(self, request_id: str) -> None:
        self._cancelled[request_id] = None
        while len(self._cancelled) > 10_000:
            self._cancelled.popitem(last=False)

    async def put_image(self, data: bytes) -> str:
        image_id = image_id_for(data)
        self._images[image_id] = data
        self._images.move_to_end(image_id)
        while len(self._images) > self._max_images:
            self._images.popitem(last=False)
        return image_id

    async def workers_alive(self) -> dict[Role, int]:
        now = time.monotonic()
        alive: dict[Role, int] = {"policy": 0, "prm": 0}
        for (role, _), seen in self._heartbeats.items():
            if now - seen < self._heartbeat_ttl_s:
                alive[role] += 1
        return alive

    async def queue_stats(self) -> dict[Role, QueueStats]:
        return {role: QueueStats(waiting=queue.qsize(), pending=0) for role, queue in self._queues.items()}

    # --- worker side ------------------------------------------------------------------------------
    async def take(self, role: Role, max_jobs: int, max_wait_s: float) -> list[Job]:
        queue = self._queues[role]
        try:
            first = await asyncio.wait_for(queue.get(), POLL_INTERVAL_S)
        except TimeoutError:
            return []
        jobs = [first]
        while len(jobs) < max_jobs and not queue.empty():
            jobs.append(queue.get_nowait())
        if len(jobs) == 1:
            return jobs  # nothing else was queued: no load to batch with, so no wait
        deadline = time.monotonic() + max_wait_s
        while len(jobs) < max_jobs:
            if not queue.empty():
                jobs.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return jobs

    async def reply(self, answers: Sequence[tuple[Job, Result]]) -> None:
        for _, result in answers:
            self._pending.resolve(result)

    async def skip(self, job: Job) -> None:
        """Nothing to acknowledge in memory."""

    async def release(self, jobs: Sequence[Job]) -> None:
        """Queued again (behind the jobs queued since: the queue is FIFO)."""
        for job in jobs:
            queue = self._queues[role_of(job)]
            try:
                queue.put_nowait(job)
            except asyncio.QueueFull:
                error = JobError(code="worker_error", message="handed back to a full queue", recoverable=True)
                self._pending.resolve(failed_result(job, error))

    async def is_cancelled(self, request_id: str) -> bool:
        return request_id in self._cancelled

    async def get_image(self, image_id: str) -> bytes:
        return self._images[image_id]

    async def heartbeat(self, role: Role, worker_id: str) -> None:
        self._heartbeats[(role, worker_id)] = time.monotonic()

    async def forget_worker(self, role: Role, worker_id: str) -> None:
        self._heartbeats.pop((role, worker_id), None)
