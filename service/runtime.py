"""What the gateway holds for its lifetime: the queue client and the solver over it.

The gateway knows only the queue interface (``atomthink.queue``) and the ``PromptLimits`` Protocol; it never
imports a worker or a model library. In-process workers (``atomthink serve``, the one-process mode) are wired one
floor up, in ``atomthink_serve.embedded``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from atomthink.protocol import Role
from atomthink.queue import make_queue
from atomthink.queue.base import JobClient
from atomthink.settings import Settings
from service.events import EventSink
from service.orchestrator.solver import PromptLimits, Solver
from service.schemas import SolveParams, SolveResponse

LimitsFactory = Callable[[Settings], PromptLimits | None]
"""Builds the gateway's first-prompt check from settings (blocking: it reads tokenizer files; run in a thread)."""


@dataclass
class Runtime:
    """What the gateway holds on ``app.state``: the settings, the queue client and the solver."""

    settings: Settings
    client: JobClient
    solver: Solver

    async def solve(
        self, params: SolveParams, image: bytes | None = None, sink: EventSink | None = None
    ) -> SolveResponse:
        return await self.solver.solve(params, image, sink)

    async def workers_alive(self) -> dict[Role, int]:
        return await self.client.workers_alive()


@contextlib.asynccontextmanager
async def gateway_runtime(settings: Settings, limits: LimitsFactory | None = None) -> AsyncIterator[Runtime]:
    """Gateway only: workers are other processes sharing the Redis queue (``atomthink gateway``).

    ``limits`` builds the first-prompt context check (None: only the workers check each job)."""
    queue = make_queue(settings)
    check = await asyncio.to_thread(limits, settings) if limits is not None else None
    try:
        yield Runtime(settings, queue, Solver(queue, settings, limits=check))
    finally:
        await queue.close()
