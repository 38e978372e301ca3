"""HTTP plumbing shared by the remote (OpenAI-compatible) backends: one async client on its own loop thread.

Endpoints and the API key come only from settings; nothing is contacted unless a remote backend is configured.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr

from atomthink.errors import BackendUnavailable
from workers.backends.loop_thread import LoopThread

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")
log = logging.getLogger(__name__)


class RemoteError(BackendUnavailable):
    """A remote model server answered with an error or could not be reached; a later retry may succeed."""

    code = "remote_backend_error"


class RemoteUnavailable(RemoteError):
    """The server is down, restarting or overloaded (no connection, a timeout, 502/503/504) and stayed so for the
    whole retry budget; the job may succeed on a later try."""

    code = "model_server_unavailable"


class RemoteRejected(RemoteError):
    """The server answered our request with a client error (4xx): retrying the same request cannot help."""

    code = "model_server_rejected"
    recoverable = False


UNAVAILABLE_STATUS = frozenset({502, 503, 504})
"""Answers of a server that is starting, draining or overloaded (and of a proxy in front of a dead one)."""
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ReadTimeout, httpx.WriteTimeout)
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0


def backoff_delays(first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> Iterator[float]:
    """Exponential back-off with full jitter: 0.1 s, 0.2 s, ... up to 2 s between tries."""
    delay = first_s
    while True:
        yield random.uniform(0, delay)
        delay = min(max_s, delay * 2)


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000`` (vLLM serves ``/pooling`` and ``/health`` at the root)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class RemoteClient:
    """Posts typed requests concurrently (bounded by ``max_concurrency``) from synchronous backend methods."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: SecretStr | None,
        timeout_s: float,
        max_concurrency: int,
        name: str,
        retry_s: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        """How long a server that is down is retried (with back-off) before a call fails with ``RemoteUnavailable``."""
        self.retries = 0
        """Tries repeated so far (all calls)."""
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        self._loop = LoopThread(name)
        self._client, self._semaphore = self._loop.run(self._open(headers, timeout_s, max_concurrency))

    @staticmethod
    async def _open(
        headers: dict[str, str], timeout_s: float, max_concurrency: int
    ) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        client = httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits)
        return client, asyncio.Semaphore(max_concurrency)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of this client's calls to completion (from any thread but the loop's own)."""
        return self._loop.run(coro)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine of this client's calls from another event loop (the worker's)."""
        return await self._loop.arun(coro)

    async def post(self, url: str, payload: BaseModel, response_type: type[R]) -> R:
        """POST ``payload`` as JSON (unset optional fields left out) and parse the answer as ``response_type``.

        A server that cannot be reached, times out or answers 502/503/504 is retried with back-off for
        ``retry_s`` (the calls are idempotent: seeded sampling, greedy scoring), then ``RemoteUnavailable``; a
        4xx answer fails at once with ``RemoteRejected``; any other error answer with ``RemoteError``."""
        body = payload.model_dump(mode="json", exclude_none=True)
        give_up_at = time.monotonic() + self.retry_s
        delays = backoff_delays()
        async with self._semaphore:
            for attempt in itertools.count():
                try:
                    response = await self._client.post(url, json=body)
                except _DROPPED as exc:
                    # a pooled keep-alive connection the server closed as it was reused: one more try at once
                    if attempt == 0:
                        continue
                    problem = f"{url}: {type(exc).__name__}: {exc}"
                except _UNREACHABLE as exc:
                    problem = f"{url}: {type(exc).__name__}: {exc}"
                except httpx.HTTPError as exc:
                    raise RemoteError(f"{url}: {type(exc).__name__}: {exc}") from exc
                else:
                    if response.status_code not in UNAVAILABLE_STATUS:
                        break
                    problem = f"{url} answered {response.status_code}: {response.text[:200]}"
                delay = next(delays)
                if time.monotonic() + delay > give_up_at:
                    raise RemoteUnavailable(f"{problem} (after {attempt + 1} tries in {self.retry_s:g} s)")
                self.retries += 1
                log.warning("%s; retrying in %.2f s", problem, delay)
                await asyncio.sleep(delay)
        if 400 <= response.status_code < 500:
            raise RemoteRejected(f"{url} answered {response.status_code}: {response.text[:500]}")
        if response.status_code != 200:
            raise RemoteError(f"{url} answered {response.status_code}: {response.text[:500]}")
        return response_type.model_validate_json(response.content)

    def close(self) -> None:
        """Close the connection pool and the loop thread."""
        try:
            self._loop.run(self._client.aclose())
        finally:
            self._loop.close()
