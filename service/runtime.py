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
from atomthink.settings import Settings
from service.orchestrator.solver import Solver
from service.schemas import SolveParams, SolveResponse
from workers.backends.base import PolicyBackend, StepScorer
from workers.worker import PolicyWorker, PrmWorker

log = logging.getLogger(__name__)


def load_policy(settings: Settings) -> PolicyBackend:
    from workers.backends.hf_policy import TransformersPolicy

    return TransformersPolicy(
        settings.policy_model, preset=settings.prompt_preset, device=settings.device, dtype=settings.dtype
    )


def load_prm(settings: Settings) -> StepScorer:
    from workers.backends.hf_prm import TransformersPrm

    return TransformersPrm(settings.prm_model, preset=settings.prm_preset, device=settings.device, dtype=settings.dtype)


@dataclass
class Runtime:
    """What the gateway holds on ``app.state``: the solver, the queue client and any in-process workers."""

    settings: Settings
    client: JobClient
    solver: Solver
    policy: PolicyBackend | None = None
    prm: StepScorer | None = None
    workers: list[PolicyWorker | PrmWorker] = field(default_factory=list)

    async def solve(self, params: SolveParams, image: bytes | None = None) -> SolveResponse:
        return await self.solver.solve(params, image)

    async def workers_alive(self) -> dict[Role, int]:
        return await self.client.workers_alive()


@contextlib.asynccontextmanager
async def embedded_runtime(
    settings: Settings,
    *,
    policy: PolicyBackend | None = None,
    prm: StepScorer | None = None,
) -> AsyncIterator[Runtime]:
    """Gateway and workers in one process over the in-memory queue (``atomthink serve``'s default).

    Backends are loaded from settings unless given (tests pass already loaded ones to share them).
    """
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if policy is None:
        policy = await asyncio.to_thread(load_policy, settings)
    if prm is None:
        prm = await asyncio.to_thread(load_prm, settings)
    queue = InMemoryStepQueue()
    source: JobSource = queue
    workers: list[PolicyWorker | PrmWorker] = [
        PolicyWorker(
            source,
            policy,
            batch_size=settings.policy_batch_size,
            max_wait_s=settings.policy_max_wait_ms / 1000,
        ),
        PrmWorker(source, prm, batch_size=settings.prm_batch_size, max_wait_s=settings.prm_max_wait_ms / 1000),
    ]
    tasks = [asyncio.create_task(worker.run(), name=worker.worker_id) for worker in workers]
    runtime = Runtime(settings, queue, Solver(queue, settings), policy, prm, workers)
    try:
        yield runtime
    finally:
        for worker in workers:
            worker.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
