"""Wires the parts for one process: the queue, in-process workers when asked, and the solver."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from atomthink.protocol import Role
from atomthink.queue.base import JobClient, JobSource
from atomthink.queue.memory import InMemoryStepQueue
from atomthink.queue.redis_streams import RedisStepQueue
from atomthink.settings import Settings
from service.events import EventSink
from service.orchestrator.solver import Solver
from service.schemas import SolveParams, SolveResponse
from workers.backends.base import PolicyBackend, StepScorer
from workers.backends.context import FirstPromptCheck
from workers.backends.registry import close_backend, load_policy, load_prm
from workers.worker import PolicyWorker, PrmWorker

log = logging.getLogger(__name__)


def make_queue(settings: Settings) -> InMemoryStepQueue | RedisStepQueue:
    if settings.queue == "redis":
        return RedisStepQueue(
            settings.redis_url,
            prefix=settings.key_prefix,
            max_queue_length=settings.max_queue_length,
            visibility_timeout_s=settings.visibility_timeout_s,
            max_deliveries=settings.max_deliveries,
            image_ttl_s=settings.image_ttl_s,
            cancel_ttl_s=settings.cancel_ttl_s,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
        )
    return InMemoryStepQueue(max_queued=settings.max_queue_length, heartbeat_ttl_s=settings.heartbeat_ttl_s)


def make_policy_worker(source: JobSource, policy: PolicyBackend, settings: Settings) -> PolicyWorker:
    return PolicyWorker(
        source,
        policy,
        batch_size=settings.policy_batch_size,
        max_wait_s=settings.policy_max_wait_ms / 1000,
        max_inflight=settings.policy_max_inflight,
        continuous=None if settings.engine_feeding == "continuous" else False,
    )


def make_prm_worker(source: JobSource, prm: StepScorer, settings: Settings) -> PrmWorker:
    return PrmWorker(
        source,
        prm,
        batch_size=settings.prm_batch_size,
        max_wait_s=settings.prm_max_wait_ms / 1000,
        max_inflight=settings.prm_max_inflight,
        continuous=None if settings.engine_feeding == "continuous" else False,
    )


@dataclass
class Runtime:
    """What the gateway holds on ``app.state``: the solver, the queue client and any in-process workers."""

    settings: Settings
    client: JobClient
    solver: Solver
    policy: PolicyBackend | None = None
    prm: StepScorer | None = None
    workers: list[PolicyWorker | PrmWorker] = field(default_factory=list)

    async def solve(
        self, params: SolveParams, image: bytes | None = None, sink: EventSink | None = None
    ) -> SolveResponse:
        return await self.solver.solve(params, image, sink)

    async def workers_alive(self) -> dict[Role, int]:
        return await self.client.workers_alive()


@contextlib.asynccontextmanager
async def build_runtime(
    settings: Settings,
    *,
    with_workers: bool = True,
    policy: PolicyBackend | None = None,
    prm: StepScorer | None = None,
) -> AsyncIterator[Runtime]:
    """The queue named by settings, plus (``with_workers``) a policy and a PRM worker in this process.

    ``atomthink serve`` runs with workers (over memory or Redis); ``atomthink gateway`` runs without them against
    Redis. Backends are loaded from settings unless given (tests pass loaded ones to share them).
    """
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    queue = make_queue(settings)
    workers: list[PolicyWorker | PrmWorker] = []
    owned: list[object] = []  # backends loaded here are closed here; given ones belong to the caller
    if with_workers:
        if policy is None:
            policy = await asyncio.to_thread(load_policy, settings)
            owned.append(policy)
        if prm is None:
            prm = await asyncio.to_thread(load_prm, settings)
            owned.append(prm)
        workers = [make_policy_worker(queue, policy, settings), make_prm_worker(queue, prm, settings)]
    if with_workers:
        limits = FirstPromptCheck.from_backends(policy, prm)
    else:
        limits = await asyncio.to_thread(FirstPromptCheck.from_settings, settings)
    tasks = [asyncio.create_task(worker.run(), name=worker.worker_id) for worker in workers]
    try:
        yield Runtime(settings, queue, Solver(queue, settings, limits=limits), policy, prm, workers)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await queue.close()
        for backend in owned:
            close_backend(backend)


def embedded_runtime(settings: Settings) -> contextlib.AbstractAsyncContextManager[Runtime]:
    """Gateway and workers in one process (``atomthink serve``)."""
    return build_runtime(settings, with_workers=True)


def gateway_runtime(settings: Settings) -> contextlib.AbstractAsyncContextManager[Runtime]:
    """Gateway only; workers are other processes sharing the Redis queue (``atomthink gateway``)."""
    return build_runtime(settings, with_workers=False)
