"""What the gateway holds for its lifetime: the queue client and the solver over it.

The gateway knows only the queue interface (``atomthink.queue``) and the ``PromptLimits`` Protocol; it never
imports a worker or a model library. In-process workers (``atomthink serve``, the one-process mode) are wired one
floor up, in ``atomthink_serve.embedded``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from atomthink.errors import Draining
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
    """What the gateway holds on ``app.state``: the settings, the queue client and the solver, and the searches it
    runs (so that a draining gateway can let them finish, or stop them)."""

    settings: Settings
    client: JobClient
    solver: Solver
    draining: bool = field(default=False, init=False)
    _searches: set[asyncio.Task[SolveResponse]] = field(default_factory=set, init=False)
    _stopped: bool = field(default=False, init=False)

    async def solve(
        self, params: SolveParams, image: bytes | None = None, sink: EventSink | None = None
    ) -> SolveResponse:
        if self.draining:
            raise Draining("this gateway is shutting down and takes no new search; retry (another gateway answers)")
        search = asyncio.create_task(self.solver.solve(params, image, sink))
        self._searches.add(search)
        search.add_done_callback(self._searches.discard)
        try:
            return await asyncio.shield(search)  # the caller's cancellation (a client gone) is passed on below
        except asyncio.CancelledError:
            if not search.done():
                search.cancel()  # the client went away: the search cancels its queued jobs
                raise
            if self._stopped and search.cancelled():
                grace = self.settings.drain_grace_s
                raise Draining(f"this gateway shut down and stopped the search after its {grace:g} s grace") from None
            raise

    @property
    def searches(self) -> int:
        """Searches running now."""
        return len(self._searches)

    async def drain(self, grace_s: float) -> int:
        """Refuse new searches, wait up to ``grace_s`` for those running, then stop the rest (each caller gets
        ``Draining``; the searches cancel their jobs). Returns how many were stopped."""
        self.draining = True
        running = set(self._searches)
        if running and grace_s > 0:
            await asyncio.wait(running, timeout=grace_s)
        left = [search for search in running if not search.done()]
        self._stopped = True
        for search in left:
            search.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        return len(left)

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
