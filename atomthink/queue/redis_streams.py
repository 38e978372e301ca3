"""Step queue on Redis Streams: any number of gateways and workers on any number of nodes share the work.

- One stream per role, one consumer group; a worker reads a batch with ``XREADGROUP COUNT B BLOCK T``.
- Results go to the submitting gateway's reply stream, read by one listener task per gateway (no per-request polling).
- A job is ``XACK``-ed (and deleted) only after its result is written; ``XAUTOCLAIM`` hands jobs idle longer than the
  visibility timeout (a dead or stuck worker's) to a live worker; a job delivered more than ``max_deliveries`` times
  goes to the dead-letter stream and its request gets a typed error.
- Images are stored once per request under their content hash with a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as redis
from pydantic import TypeAdapter
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from atomthink.errors import BackendUnavailable, Overloaded
from atomthink.protocol import (
    Job,
    JobError,
    PolicyJob,
    PolicyResult,
    PrmJob,
    PrmResult,
    Result,
    Role,
    failed_result,
    role_of,
)
from atomthink.queue import metrics
from atomthink.queue.base import PendingReplies, QueueStats, image_id_for, process_name
from atomthink.queue.keys import QueueKeys
from atomthink.settings import default

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

ROLES: tuple[Role, ...] = ("policy", "prm")
JOB_TYPES: dict[Role, type[PolicyJob] | type[PrmJob]] = {"policy": PolicyJob, "prm": PrmJob}
_RESULT = TypeAdapter(PolicyResult | PrmResult)
REPLY_STREAM_MAXLEN = 100_000
REPLY_STREAM_TTL_S = 3600
LISTEN_BLOCK_MS = 1000
TAKE_BLOCK_MS = 500
FILL_POLL_S = 0.001


def _unavailable_on_redis_error(
    method: Callable[Concatenate[RedisStepQueue, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RedisStepQueue, P], Coroutine[Any, Any, T]]:
    """Redis failures surface as the typed, recoverable ``BackendUnavailable``.

    The consumer groups are re-checked on the next call: a restarted Redis without persistence has lost them.
    """

    @functools.wraps(method)
    async def wrapper(self: RedisStepQueue, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except RedisError as exc:
            self._groups_ready = False
            raise BackendUnavailable(f"queue unavailable: {exc}") from None

    return wrapper


def connect(url: str) -> Any:
    """A client for ``url`` (``redis://`` or ``rediss://``, password and TLS options in the URL).

    Typed as Any: redis-py annotates every reply as the union of all RESP shapes. Pooled connections die with a
    Redis restart: retrying on connection errors reconnects them instead of failing a request per socket.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class RedisStepQueue:
    """Satisfies ``JobClient`` (gateway side) and ``JobSource`` (worker side) over one Redis connection pool."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = default("key_prefix"),
        max_queue_length: int = default("max_queue_length"),
        visibility_timeout_s: float = default("visibility_timeout_s"),
        max_deliveries: int = default("max_deliveries"),
        image_ttl_s: int = default("image_ttl_s"),
        cancel_ttl_s: int = default("cancel_ttl_s"),
        heartbeat_ttl_s: float = default("heartbeat_ttl_s"),
    ) -> None:
        self.redis: Any = connect(url)
        self.keys = QueueKeys(prefix)
        self.max_queue_length = max_queue_length
        self.visibility_ms = int(visibility_timeout_s * 1000)
        self.max_deliveries = max_deliveries
        self.image_ttl_s = image_ttl_s
        self.cancel_ttl_s = cancel_ttl_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.gateway_id = uuid.uuid4().hex[:12]
        self._reply_stream = self.keys.reply_stream(self.gateway_id)
        self._pending = PendingReplies()
        self._listener: asyncio.Task[None] | None = None
        self._groups_ready = False
        self._closing = False
        # worker side: where each taken job came from, so ``reply`` can acknowledge it
        self._deliveries: dict[str, tuple[Role, str]] = {}
        self._reply_to: dict[str, str] = {}
        self._handbacks: dict[str, int] = {}
        self._last_claim: dict[Role, float] = {}

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            # redis-py may turn a cancel during a blocking read into a timeout: the flag ends the loop either way
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        with contextlib.suppress(RedisError):
            await self.redis.delete(self._reply_stream)
        await self.redis.aclose()

    async def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for role in ROLES:
            try:
                await self.redis.xgroup_create(self.keys.stream(role), self.keys.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    # --- gateway side -----------------------------------------------------------------------------
    async def call(self, job: Job, timeout_s: float) -> Any:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name=f"reply-listener-{self.gateway_id}")
        return await self._pending.submit(job, lambda: self._enqueue(job), timeout_s)

    @_unavailable_on_redis_error
    async def _enqueue(self, job: Job) -> None:
        stream = self.keys.stream(role_of(job))
        await self._ensure_groups()
        if await self.redis.xlen(stream) >= self.max_queue_length:
            raise Overloaded(f"the {role_of(job)} queue holds {self.max_queue_length} jobs", retry_after_s=2)
        await self.redis.xadd(stream, {"job": job.model_dump_json(), "reply_to": self._reply_stream})

    async def _listen(self) -> None:
        """Resolve futures from this gateway's reply stream; survives Redis outages (jobs then time out)."""
        last_id = "$"
        while not self._closing:
            try:
                if last_id == "$":
                    await self.redis.xadd(self._reply_stream, {"hello": "1"}, maxlen=REPLY_STREAM_MAXLEN)
                    await self.redis.expire(self._reply_stream, REPLY_STREAM_TTL_S)
                    last_id = "0"
                response = await self.redis.xread({self._reply_stream: last_id}, count=256, block=LISTEN_BLOCK_MS)
                for _, entries in response or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        payload = fields.get(b"result")
                        if payload is not None:
                            self._pending.resolve(_RESULT.validate_json(payload))
                    await self.redis.xtrim(self._reply_stream, minid=last_id, approximate=True)
                await self.redis.expire(self._reply_stream, REPLY_STREAM_TTL_S)
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                if self._closing:
                    return
                log.warning("reply listener: %s; retrying", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("reply listener: bad result message skipped")

    async def cancel(self, request_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self.redis.set(self.keys.cancelled(request_id), b"1", ex=self.cancel_ttl_s)

    @_unavailable_on_redis_error
    async def put_image(self, data: bytes) -> str:
        image_id = image_id_for(data)
        await self.redis.set(self.keys.image(image_id), data, ex=self.image_ttl_s)
        return image_id

    @_unavailable_on_redis_error
    async def workers_alive(self) -> dict[Role, int]:
        since = time.time() - self.heartbeat_ttl_s
        return {role: int(await self.redis.zcount(self.keys.workers(role), since, "+inf")) for role in ROLES}

    @_unavailable_on_redis_error
    async def queue_stats(self) -> dict[Role, QueueStats]:
        await self._ensure_groups()
        stats: dict[Role, QueueStats] = {}
        for role in ROLES:
            stream = self.keys.stream(role)
            pending = int((await self.redis.xpending(stream, self.keys.group))["pending"])
            stats[role] = QueueStats(waiting=int(await self.redis.xlen(stream)) - pending, pending=pending)
        return stats

    # --- worker side ------------------------------------------------------------------------------
    @_unavailable_on_redis_error
    async def take(self, role: Role, max_jobs: int, max_wait_s: float) -> list[Job]:
        await self._ensure_groups()
        jobs = await self._reclaim(role, max_jobs)
        if not jobs:
            jobs = await self._read(role, max_jobs, TAKE_BLOCK_MS)  # a new entry wakes a blocked reader at once
            if not jobs:
                return []
        if max_wait_s <= 0:
            return jobs  # no batch to fill (continuous feeding): the read already took every job queued
        if len(jobs) < max_jobs:
            more = await self._read(role, max_jobs - len(jobs), None)
            if not more and len(jobs) == 1:
                return jobs  # nothing else was queued: no load to batch with, so no wait
            jobs += more
        # Fill the batch by polling, not with a short BLOCK: Redis expires blocked reads only at its `hz` tick
        # (100 ms by default), so BLOCK 5 would hold every batch for up to 100 ms.
        deadline = time.monotonic() + max_wait_s
        while len(jobs) < max_jobs:
            jobs += await self._read(role, max_jobs - len(jobs), None)
            remaining = deadline - time.monotonic()
            if len(jobs) >= max_jobs or remaining <= 0:
                break
            await asyncio.sleep(min(remaining, FILL_POLL_S))
        return jobs

    async def _read(self, role: Role, count: int, block_ms: int | None) -> list[Job]:
        """New jobs for this consumer; ``block_ms`` waits for the first (None: return at once)."""
        response = await self.redis.xreadgroup(
            self.keys.group, self._consumer(role), {self.keys.stream(role): ">"}, count=count, block=block_ms
        )
        entries = [entry for _, batch in response or [] for entry in batch]
        return [job for job in (self._accept(role, eid, fields) for eid, fields in entries) if job is not None]

    def _consumer(self, role: Role) -> str:
        """Consumer name in the group: says which host and process hold a pending job."""
        return process_name(role, self.gateway_id)

    def _accept(self, role: Role, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Job | None:
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        try:
            job = JOB_TYPES[role].model_validate_json(fields[b"job"])
        except Exception:
            log.exception("dropping malformed %s job %s", role, entry)
            asyncio.get_running_loop().create_task(self._ack(role, entry))
            return None
        self._deliveries[job.job_id] = (role, entry)
        self._reply_to[job.job_id] = fields.get(b"reply_to", b"").decode()
        self._handbacks[job.job_id] = int(fields.get(b"handbacks", b"0"))
        return job

    async def _reclaim(self, role: Role, max_jobs: int) -> list[Job]:
        """Jobs idle past the visibility timeout (their worker died or hung), claimed for this worker."""
        now = time.monotonic()
        if now - self._last_claim.get(role, 0.0) < self.visibility_ms / 4000:
            return []
        self._last_claim[role] = now
        stream = self.keys.stream(role)
        consumer = self._consumer(role)
        _, claimed, *_ = await self.redis.xautoclaim(
            stream, self.keys.group, consumer, min_idle_time=self.visibility_ms, start_id="0-0", count=max_jobs
        )
        jobs: list[Job] = []
        for entry_id, fields in claimed:
            if not fields:
                continue
            job = self._accept(role, entry_id, fields)
            if job is None:
                continue
            entry = self._deliveries[job.job_id][1]
            found = await self.redis.xpending_range(stream, self.keys.group, min=entry, max=entry, count=1)
            if not found:  # its first worker was slow, not dead: it answered and acknowledged the job meanwhile
                self._forget(job)
                continue
            [pending] = found
            if pending["times_delivered"] > self.max_deliveries:
                await self._dead_letter(job, pending["times_delivered"])
                continue
            metrics.REDELIVERIES.labels(role).inc()
            jobs.append(job)
        return jobs

    async def _dead_letter(self, job: Job, deliveries: int, *, what: str = "delivered") -> None:
        role = role_of(job)
        reason = f"{what} {deliveries} times without a result (max {self.max_deliveries}); moved to dead letters"
        await self.redis.xadd(
            self.keys.dead_letters,
            {"role": role, "job": job.model_dump_json(), "reason": reason},
            maxlen=REPLY_STREAM_MAXLEN,
        )
        metrics.DEAD_LETTERS.labels(role).inc()
        log.error("%s job %s of request %s: %s", role, job.job_id, job.request_id, reason)
        await self.reply([(job, failed_result(job, JobError(code="dead_letter", message=reason, recoverable=False)))])

    @_unavailable_on_redis_error
    async def reply(self, answers: Sequence[tuple[Job, Result]]) -> None:
        """Write every result to its gateway's reply stream, then acknowledge the jobs: one round trip in all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job, result in answers:
                reply_to = self._reply_to.pop(job.job_id, "")
                if reply_to:
                    pipe.xadd(reply_to, {"result": result.model_dump_json()}, maxlen=REPLY_STREAM_MAXLEN)
                    # a gateway that is gone (closed, killed, or Redis restarted) no longer renews its stream's TTL:
                    # a reply that creates the stream again must not leave it without one
                    pipe.expire(reply_to, REPLY_STREAM_TTL_S)
                self._queue_ack(pipe, job)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def skip(self, job: Job) -> None:
        """Acknowledge a job without a result (its request was cancelled)."""
        self._reply_to.pop(job.job_id, None)
        async with self.redis.pipeline(transaction=False) as pipe:
            self._queue_ack(pipe, job)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def release(self, jobs: Sequence[Job]) -> None:
        """Each job added again at the end of its stream (same job, same reply stream, one more hand-back) and its
        old entry acknowledged, in one transaction: another worker reads it at once, with no visibility timeout to
        wait out. Past ``max_deliveries`` hand-backs the job goes to the dead letters and its request fails."""
        dead: list[tuple[Job, int]] = []
        async with self.redis.pipeline(transaction=True) as pipe:
            for job in jobs:
                handbacks = self._handbacks.get(job.job_id, 0) + 1
                if handbacks > self.max_deliveries:
                    dead.append((job, handbacks))
                    continue
                fields = {"job": job.model_dump_json(), "reply_to": self._reply_to.pop(job.job_id, ""),
                          "handbacks": str(handbacks)}  # fmt: skip
                pipe.xadd(self.keys.stream(role_of(job)), fields)
                self._queue_ack(pipe, job)
                metrics.REDELIVERIES.labels(role_of(job)).inc()
            await pipe.execute()
        for job, handbacks in dead:
            await self._dead_letter(job, handbacks, what="handed back")

    def _forget(self, job: Job) -> None:
        """Drop what this worker noted about a taken job that it will neither answer nor acknowledge."""
        self._deliveries.pop(job.job_id, None)
        self._reply_to.pop(job.job_id, None)
        self._handbacks.pop(job.job_id, None)

    def _queue_ack(self, pipe: Any, job: Job) -> None:
        """Add XACK and XDEL of a taken job to ``pipe`` (after its reply, if any)."""
        self._handbacks.pop(job.job_id, None)
        delivery = self._deliveries.pop(job.job_id, None)
        if delivery is not None:
            role, entry = delivery
            pipe.xack(self.keys.stream(role), self.keys.group, entry)
            pipe.xdel(self.keys.stream(role), entry)

    async def _ack(self, role: Role, entry: str) -> None:
        stream = self.keys.stream(role)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, self.keys.group, entry)
            pipe.xdel(stream, entry)
            await pipe.execute()

    @_unavailable_on_redis_error
    async def is_cancelled(self, request_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.cancelled(request_id)))

    @_unavailable_on_redis_error
    async def get_image(self, image_id: str) -> bytes:
        data = await self.redis.get(self.keys.image(image_id))
        if data is None:
            raise KeyError(f"image {image_id} expired or was never stored")
        return bytes(data)

    @_unavailable_on_redis_error
    async def heartbeat(self, role: Role, worker_id: str) -> None:
        now = time.time()
        key = self.keys.workers(role)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {worker_id: now})
            pipe.zremrangebyscore(key, "-inf", now - 10 * self.heartbeat_ttl_s)
            await pipe.execute()

    async def forget_worker(self, role: Role, worker_id: str) -> None:
        """A worker that stops cleanly leaves the live set at once."""
        with contextlib.suppress(RedisError):
            await self.redis.zrem(self.keys.workers(role), worker_id)
