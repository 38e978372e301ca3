"""A gateway going away, on the Redis shape (gateway and worker processes, the shipped text policy and PRM).

- SIGTERM with a long grace: the running searches finish (200), a new one is refused with a typed 503 and
  ``Retry-After``, ``/readyz`` answers 503 ``draining``, the gateway exits 0.
- SIGTERM with a short grace: a plain search still running is stopped (503 ``gateway_draining``), a streamed one ends
  with an ``error`` event; their queued jobs are cancelled and the consumer groups end idle.
- SIGKILL: the jobs it left queued expire (the workers acknowledge them without computing them) and the groups end
  idle; its reply stream carries a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from harness.servers import REPO_ROOT, ServerProcess, WorkerProcess
from research.data.engine import make_problem
from research.data.text_dominant import text_question
from tests.conftest import TEST_REDIS_URL, delete_prefix
from tests.sse import read_events

pytestmark = pytest.mark.integration

TEXT_POLICY = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
PRM = REPO_ROOT / "models" / "atomthink-tiny-prm"
HELDOUT_SEED = 20261125


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], list[WorkerProcess], Any]]:
    logs = tmp_path_factory.mktemp("logs")
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": prefix,
           "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
           "ATOMTHINK_TORCH_THREADS": "1", "ATOMTHINK_VISIBILITY_TIMEOUT_S": "10"}  # fmt: skip
    workers = [WorkerProcess(role, env, logs / f"{role}.log") for role in ("policy", "prm")]
    try:
        yield env, workers, logs
    finally:
        for worker in workers:
            worker.terminate()
        delete_prefix(TEST_REDIS_URL, prefix)


def body(i: int, **extra: Any) -> dict[str, Any]:
    return {"question": text_question(make_problem(HELDOUT_SEED, 80 + i)), "mode": "slow", "strategy": "beam",
            "candidates": 4, "beam_width": 2, "max_steps": 12, "seed": i, **extra}  # fmt: skip


def start_gateway(env: dict[str, str], logs: Any, name: str, **extra: str) -> ServerProcess:
    gateway = ServerProcess(["gateway"], {**env, **extra}, log_path=logs / f"gateway-{name}.log")
    gateway.__enter__()
    return gateway


def idle(prefix: str, timeout_s: float) -> dict[str, int]:
    """Wait until no job is left (waiting or pending) in the policy and PRM streams; return what is left. A job
    delivered to a worker while it was stopped may be claimed again only after the visibility timeout (10 s here)."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            left = {}
            for role in ("policy", "prm"):
                left[role] = int(client.xlen(f"{prefix}:stream:{role}"))  # acknowledged jobs are deleted
            if not any(left.values()) or time.monotonic() > deadline:
                return left
            time.sleep(0.2)
    finally:
        client.close()


async def post_all(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=300) as client:
        return await asyncio.gather(*(client.post(url + "/solve", json=b) for b in bodies))


@contextlib.contextmanager
def stopped(worker: WorkerProcess) -> Iterator[None]:
    """The worker stopped (SIGSTOP) for the block: the searches wait on its jobs, so they are surely running."""
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


def test_sigterm_lets_running_searches_finish_and_refuses_new_ones(cluster: Any) -> None:
    env, workers, logs = cluster
    gateway = start_gateway(env, logs, "grace", ATOMTHINK_DRAIN_GRACE_S="120")
    assert gateway.process is not None

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
        with stopped(workers[1]):  # the PRM worker: both searches wait for their first scores
            running = asyncio.create_task(post_all(gateway.url, [body(0), body(1)]))
            await asyncio.sleep(1.5)
            os.kill(gateway.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(timeout=30) as client:
                refused = await client.post(gateway.url + "/solve", json=body(2))
                ready = await client.get(gateway.url + "/readyz")
        return await running, refused, ready

    try:
        finished, refused, ready = asyncio.run(scenario())
        assert [r.status_code for r in finished] == [200, 200], [r.text for r in finished]
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "gateway_draining", refused.text
        assert refused.headers["Retry-After"] == "1"
        assert ready.status_code == 503 and ready.json()["draining"] is True
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()


def test_searches_past_the_grace_are_stopped_typed_and_their_jobs_cancelled(cluster: Any) -> None:
    env, workers, logs = cluster
    gateway = start_gateway(env, logs, "short", ATOMTHINK_DRAIN_GRACE_S="1")
    assert gateway.process is not None
    events: list[Any] = []

    def stream() -> None:
        with httpx.stream("POST", gateway.url + "/solve", json=body(3, stream=True), timeout=120) as response:
            assert response.status_code == 200
            events.extend(read_events(response.iter_lines()))

    async def scenario() -> list[httpx.Response]:
        with stopped(workers[1]):  # the searches wait on the PRM past the grace period
            streamed = asyncio.create_task(asyncio.to_thread(stream))
            plain = asyncio.create_task(post_all(gateway.url, [body(4), body(5)]))
            await asyncio.sleep(1.5)
            os.kill(gateway.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
            await streamed
            result = await plain
        return result

    try:
        signalled = time.monotonic()
        plain = asyncio.run(scenario())
        code = gateway.process.wait(timeout=60)
        exited_after = time.monotonic() - signalled
        assert [r.status_code for r in plain] == [503, 503], [r.text for r in plain]
        assert {r.json()["error"]["code"] for r in plain} == {"gateway_draining"}
        assert events and events[-1].event == "error", [e.event for e in events]
        assert events[-1].data["error"]["code"] == "gateway_draining"
        assert code == 0
        left = idle(env["ATOMTHINK_KEY_PREFIX"], timeout_s=30)
        assert left == {"policy": 0, "prm": 0}, f"jobs left in the streams: {left}"
        print(f"short grace: gateway exited 0 {exited_after:.1f} s after SIGTERM (grace 1 s), streams idle")
    finally:
        gateway.stop()


def test_a_killed_gateways_jobs_expire_and_the_groups_end_idle(cluster: Any) -> None:
    env, workers, logs = cluster
    policy = workers[0]
    gateway = start_gateway(env, logs, "killed", ATOMTHINK_JOB_TIMEOUT_S="4")
    assert gateway.process is not None
    prefix = env["ATOMTHINK_KEY_PREFIX"]
    expired_before = policy.metric('atomthink_worker_jobs_total{outcome="expired",role="policy"}')
    with stopped(policy):  # jobs wait in the stream: nobody takes them

        async def scenario() -> None:
            async with httpx.AsyncClient(timeout=30) as client:
                solves = [asyncio.create_task(client.post(gateway.url + "/solve", json=body(6 + i))) for i in range(3)]
                await asyncio.sleep(1.5)
                os.killpg(gateway.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                await asyncio.gather(*solves, return_exceptions=True)

        asyncio.run(scenario())
        gateway.process.wait(timeout=10)
        client = redis.Redis.from_url(TEST_REDIS_URL)
        try:
            queued = int(client.xlen(f"{prefix}:stream:policy"))
            replies = list(client.scan_iter(match=f"{prefix}:reply:*"))
            ttls = [int(client.ttl(key)) for key in replies]
        finally:
            client.close()
        assert queued >= 3, "the dead gateway's first jobs wait in the stream"
        assert ttls and all(0 < ttl <= 3600 for ttl in ttls), f"a dead gateway's reply stream expires: {ttls}"
        time.sleep(4.5)  # past the job timeout: nobody waits for those results any more
    left = idle(prefix, timeout_s=30)
    assert left == {"policy": 0, "prm": 0}, f"jobs left in the streams: {left}"
    expired = policy.metric('atomthink_worker_jobs_total{outcome="expired",role="policy"}') - expired_before
    outcomes = [line for line in httpx.get(policy.metrics_url).text.splitlines() if "jobs_total{" in line]
    assert expired >= queued, f"{expired} of {queued} queued jobs skipped as expired: {outcomes}"
    print(f"killed gateway: {queued} queued jobs, {expired:.0f} acknowledged as expired, streams idle")
