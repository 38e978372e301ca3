"""HTTP plumbing shared by the remote (OpenAI-compatible) backends: one async client on its own loop thread.

Endpoints and the API key come only from settings; nothing is contacted unless a remote backend is configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr

from atomthink.errors import BackendUnavailable
from workers.backends.loop_thread import LoopThread

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


class RemoteError(BackendUnavailable):
    """A remote model server answered with an error or could not be reached; a later retry may succeed."""

    code = "remote_backend_error"


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
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
        """POST ``payload`` as JSON (unset optional fields left out) and parse the answer as ``response_type``."""
        body = payload.model_dump(mode="json", exclude_none=True)
        async with self._semaphore:
            for attempt in range(2):
                try:
                    response = await self._client.post(url, json=body)
                    break
                except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    # a pooled keep-alive connection the server closed as it was reused: the calls are idempotent
                    # (seeded sampling, greedy scoring), so one retry on a fresh connection is safe
                    if attempt:
                        raise RemoteError(f"{url}: {type(exc).__name__}: {exc}") from exc
                except httpx.HTTPError as exc:
                    raise RemoteError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise RemoteError(f"{url} answered {response.status_code}: {response.text[:500]}")
        return response_type.model_validate_json(response.content)

    def close(self) -> None:
        """Close the connection pool and the loop thread."""
        try:
            self._loop.run(self._client.aclose())
        finally:
            self._loop.close()
