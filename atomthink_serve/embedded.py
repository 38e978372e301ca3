"""The one-process mode (``atomthink serve``): the gateway's runtime plus a policy and a PRM worker in this process,
on the memory queue (or Redis, when settings name it). The only place that wires ``service`` to ``workers``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from atomthink.context import FirstPromptCheck
from atomthink.queue import make_queue
from atomthink.settings import Settings
from service.orchestrator.solver import Solver
from service.runtime import Runtime
from workers.backends.base import PolicyBackend, StepScorer
from workers.backends.registry import close_backend, load_policy, load_prm
from workers.main import make_policy_worker, make_prm_worker, set_torch_threads
from workers.worker import PolicyWorker, PrmWorker


@dataclass
class EmbeddedRuntime(Runtime):
    """The gateway's runtime with the in-process workers and their backends."""

    policy: PolicyBackend | None = None
    prm: StepScorer | None = None
    workers: list[PolicyWorker | PrmWorker] = field(default_factory=list)


@contextlib.asynccontextmanager
async def build_runtime(
    settings: Settings, *, policy: PolicyBackend | None = None, prm: StepScorer | None = None
) -> AsyncIterator[EmbeddedRuntime]:
    """The queue named by settings with a policy and a PRM worker in this process.

    Backends are loaded from settings unless given (tests and benchmarks pass loaded ones to share them); those
    loaded here are closed here."""
    set_torch_threads(settings)
    queue = make_queue(settings)
    owned: list[object] = []
    if policy is None:
        policy = await asyncio.to_thread(load_policy, settings)
        owned.append(policy)
    if prm is None:
        prm = await asyncio.to_thread(load_prm, settings)
        owned.append(prm)
    workers: list[PolicyWorker | PrmWorker] = [
        make_policy_worker(queue, policy, settings),
        make_prm_worker(queue, prm, settings),
    ]
    limits = FirstPromptCheck.from_backends(policy, prm)
    tasks = [asyncio.create_task(worker.run(), name=worker.worker_id) for worker in workers]
    try:
        yield EmbeddedRuntime(settings, queue, Solver(queue, settings, limits=limits), policy, prm, workers)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await queue.close()
        for backend in owned:
            close_backend(backend)


def embedded_runtime(settings: Settings) -> contextlib.AbstractAsyncContextManager[EmbeddedRuntime]:
    """Gateway and workers in one process (``atomthink serve``)."""
    return build_runtime(settings)
