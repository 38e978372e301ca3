"""An asyncio event loop on its own thread, for backends whose ``generate``/``score`` is synchronous.

Workers call backends from ``asyncio.to_thread``; an async engine (vLLM's ``AsyncLLM``) or an async HTTP client
needs one long-lived loop of its own, which this owns. ``run`` submits a coroutine and blocks for its result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """``loop = LoopThread("vllm"); result = loop.run(coro)`` (or ``await loop.arun(coro)``); ``loop.close()``."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it; on timeout the coroutine is cancelled."""
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("event loop thread is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Await ``coro`` run on this loop, from another event loop; a timeout or a cancel of the caller cancels it."""
        if not self._thread.is_alive():
            coro.close()
            raise RuntimeError("event loop thread is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)

    def close(self) -> None:
        """Stop the loop after cancelling what is still running on it; idempotent."""
        if not self._thread.is_alive():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
