"""The gateway's HTTP server: uvicorn, with a drain on SIGTERM/SIGINT.

uvicorn alone closes its listening socket at the first signal (a client then sees a refused connection, not an
answer) and waits without limit for the searches in flight. Here the first signal starts a drain instead: the port
stays open and new searches get a typed 503 (``gateway_draining``, with ``Retry-After``), ``/readyz`` answers 503 so
that a load balancer moves traffic away, the searches running finish for up to ``drain_grace_s``, then those left are
stopped (their queued jobs cancelled; a streamed one ends with an ``error`` event) and uvicorn shuts down. A second
signal skips the rest of the drain.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn
from fastapi import FastAPI

from atomthink.settings import Settings
from service.runtime import Runtime

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5
"""After the drain: how long uvicorn waits for the last responses to be written before it closes them."""


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self.drain_signal: int | None = None
        self.drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_signal is None and not self.should_exit:
            self.drain_signal = sig  # picked up by the next tick, on the loop (a signal handler must stay trivial)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_signal is not None and self.drain_task is None:
            runtime = getattr(self.app.state, "runtime", None)
            if isinstance(runtime, Runtime):
                self.drain_task = asyncio.create_task(self._drain(runtime))
            else:
                self.should_exit = True
        return await super().on_tick(counter)

    async def _drain(self, runtime: Runtime) -> None:
        log.info("draining: %d searches running, grace %g s; new searches get 503", runtime.searches, self.grace_s)
        try:
            stopped = await runtime.drain(self.grace_s)
            log.info("drained: %d searches stopped at the end of the grace period", stopped)
        finally:
            self.should_exit = True


def serve(app: FastAPI, settings: Settings, log_level: str = "info") -> None:
    """Run the gateway until a signal, draining first."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level, timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S
    )
    DrainingServer(config, app, settings.drain_grace_s).run()
