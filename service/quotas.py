"""Per-key quotas: requests running at once and candidates asked for per rolling minute.

``admit(principal, cost)`` is an async context manager held while the request runs. On the Redis queue the
counters live in Redis and are checked and updated by one Lua script, so every gateway on that Redis shares them;
on the memory queue they live in the process. Over a quota: ``QuotaExceeded`` (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Protocol

from redis.exceptions import RedisError

from atomthink.errors import BackendUnavailable, QuotaExceeded
from atomthink.queue.keys import QueueKeys
from atomthink.queue.redis_streams import connect
from atomthink.settings import Settings
from service import metrics
from service.api.auth import Principal
from service.schemas import SolveParams

WINDOW_S = 60.0
LEASE_MARGIN_S = 30.0


def solve_cost(params: SolveParams) -> int:
    """Candidates a solve asks the policy for per step: the compute a quota counts, not the request (the chosen
    strategy's ``cost``, from the registry)."""
    return params.cost()


class QuotaGate(Protocol):
    """What routes call; ``admit`` raises ``QuotaExceeded`` or holds the request's share until it ends."""

    def admit(self, principal: Principal, cost: int) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def close(self) -> None: ...


class _Limits:
    def __init__(self, settings: Settings) -> None:
        self.max_concurrent = settings.quota_max_concurrent
        self.per_minute = settings.quota_candidates_per_minute
        self.lease_s = settings.request_timeout_s + LEASE_MARGIN_S

    @property
    def off(self) -> bool:
        return not self.max_concurrent and not self.per_minute

    def refuse(self, principal: Principal, quota: str, cost: int, retry_after_s: float) -> QuotaExceeded:
        metrics.QUOTA_REJECTIONS.labels(principal.name, quota).inc()
        if quota == "concurrency":
            message = f"API key {principal.name!r} already has {self.max_concurrent} requests running"
        elif cost > self.per_minute:
            message = f"the request asks for {cost} candidates, over the key's quota of {self.per_minute} per minute"
        else:
            message = f"API key {principal.name!r} is over its quota of {self.per_minute} candidates per minute"
        return QuotaExceeded(message, retry_after_s=max(1, math.ceil(retry_after_s)))


def _admitted(principal: Principal, cost: int) -> None:
    metrics.KEY_REQUESTS.labels(principal.name).inc()
    metrics.KEY_CANDIDATES.labels(principal.name).inc(cost)


class MemoryQuotas:
    """Quotas of one process (the memory queue: there is one gateway)."""

    def __init__(self, settings: Settings) -> None:
        self.limits = _Limits(settings)
        self._running: dict[str, int] = {}
        self._spent: dict[str, deque[tuple[float, int]]] = {}

    @contextlib.asynccontextmanager
    async def admit(self, principal: Principal, cost: int) -> AsyncIterator[None]:
        limits, name = self.limits, principal.name
        if not limits.off:
            now = time.monotonic()
            if limits.max_concurrent and self._running.get(name, 0) >= limits.max_concurrent:
                raise limits.refuse(principal, "concurrency", cost, 1)
            if limits.per_minute:
                spent = self._spent.setdefault(name, deque())
                while spent and spent[0][0] <= now - WINDOW_S:
                    spent.popleft()
                total = sum(c for _, c in spent)
                if total + cost > limits.per_minute:
                    raise limits.refuse(principal, "compute", cost, _retry_after(spent, total, cost, limits, now))
                spent.append((now, cost))
        self._running[name] = self._running.get(name, 0) + 1
        _admitted(principal, cost)
        metrics.KEY_RUNNING.labels(name).inc()
        try:
            yield
        finally:
            metrics.KEY_RUNNING.labels(name).dec()
            self._running[name] -= 1
            if not self._running[name]:
                del self._running[name]

    async def close(self) -> None:
        return None


def _retry_after(spent: deque[tuple[float, int]], total: int, cost: int, limits: _Limits, now: float) -> float:
    """Seconds until enough of the window's spending ages out for ``cost`` to fit."""
    if cost > limits.per_minute:
        return WINDOW_S
    need, freed = total + cost - limits.per_minute, 0
    for at, spent_cost in spent:
        freed += spent_cost
        if freed >= need:
            return at + WINDOW_S - now
    return WINDOW_S


# KEYS: running, spent. ARGV: max_concurrent, per_minute, cost, lease id, lease ms, window ms.
# Returns {1} when admitted, {0, quota, retry_after_ms} when not. Members of ``spent`` are "lease:cost".
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_running, per_minute, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease_ms, window = tonumber(ARGV[5]), tonumber(ARGV[6])
if max_running > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max_running then return {0, 'concurrency', 1000} end
end
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local spent = 0
  for i = 1, #entries, 2 do spent = spent + tonumber(string.match(entries[i], ':(%d+)$')) end
  if spent + cost > per_minute then
    local retry = window
    if cost <= per_minute then
      local need, freed = spent + cost - per_minute, 0
      for i = 1, #entries, 2 do
        freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
        if freed >= need then retry = tonumber(entries[i + 1]) + window - now; break end
      end
    end
    return {0, 'compute', retry}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[4] .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[2], window)
end
if max_running > 0 then
  redis.call('ZADD', KEYS[1], now + lease_ms, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], lease_ms)
end
return {1}
"""


class RedisQuotas:
    """Quotas shared by every gateway on one Redis; a crashed gateway's leases expire after the request timeout."""

    def __init__(self, settings: Settings) -> None:
        self.limits = _Limits(settings)
        self.keys = QueueKeys(settings.key_prefix)
        self.redis: Any = connect(settings.redis_url)  # reconnects after a Redis restart, as the queue does
        self._script = self.redis.register_script(_ADMIT)

    @contextlib.asynccontextmanager
    async def admit(self, principal: Principal, cost: int) -> AsyncIterator[None]:
        limits, name = self.limits, principal.name
        lease = uuid.uuid4().hex[:16]
        if not limits.off:
            keys = [self.keys.quota_running(name), self.keys.quota_spent(name)]
            lease_ms, window_ms = int(limits.lease_s * 1000), int(WINDOW_S * 1000)
            args: list[str | int] = [limits.max_concurrent, limits.per_minute, cost, lease, lease_ms, window_ms]
            try:
                answer = await self._script(keys=keys, args=args)
            except RedisError as exc:
                raise BackendUnavailable(f"quota store unavailable: {type(exc).__name__}") from None
            if int(answer[0]) != 1:
                quota = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
                raise limits.refuse(principal, quota, cost, int(answer[2]) / 1000)
        _admitted(principal, cost)
        metrics.KEY_RUNNING.labels(name).inc()
        try:
            yield
        finally:
            metrics.KEY_RUNNING.labels(name).dec()
            if limits.max_concurrent:
                # shielded: a cancelled request (client gone) still frees its slot
                with contextlib.suppress(RedisError):
                    await asyncio.shield(self.redis.zrem(self.keys.quota_running(name), lease))

    async def close(self) -> None:
        await self.redis.aclose()


def make_quotas(settings: Settings) -> QuotaGate:
    """Redis-shared quotas on the Redis queue when any quota is set; otherwise this process's counters."""
    if settings.queue == "redis" and not _Limits(settings).off:
        return RedisQuotas(settings)
    return MemoryQuotas(settings)
