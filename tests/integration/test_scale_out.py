"""Scale-out on a real Redis: gateway and workers as separate OS processes, faults injected with signals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio

from harness.servers import RedisServer, ServerProcess, WorkerProcess
from tests.conftest import model_env, queue_env

pytestmark = pytest.mark.integration

SLOW = {"question": "What is the value of C?", "mode": "slow", "strategy": "beam", "candidates": "3",
        "beam_width": "2", "max_steps": "3"}  # fmt: skip


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def _cluster_env(tiny_models: dict[str, Path], redis_url: str) -> dict[str, str]:
    return model_env(
        tiny_models,
        ATOMTHINK_QUEUE="redis",
        ATOMTHINK_REDIS_URL=redis_url,
        ATOMTHINK_KEY_PREFIX="cluster",
        ATOMTHINK_VISIBILITY_TIMEOUT_S="3",
        ATOMTHINK_JOB_TIMEOUT_S="90",
        ATOMTHINK_HEARTBEAT_TTL_S="3",
        ATOMTHINK_POLICY_MAX_WAIT_MS="10",
    )


async def _kill_worker_holding_jobs(
    redis_url: str, role: str, workers: list[WorkerProcess], respawn: Callable[[], WorkerProcess]
) -> WorkerProcess:
    """SIGKILL a worker that has jobs of ``role`` delivered and unanswered (consumer names carry the pid).

    A job seen pending may still be answered in the moment before the signal lands; when the dead worker's consumer
    holds nothing afterwards, that worker is replaced in ``workers`` by ``respawn()`` and another one is tried.
    """
    client = redis.asyncio.Redis.from_url(redis_url)
    stream, group = "cluster:stream:" + role, "cluster:workers"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for entry in await client.xpending_range(stream, group, "-", "+", 100):
                consumer = entry["consumer"].decode()
                victim = next((w for w in workers if w.process.pid == int(consumer.split("-")[-2])), None)
                if victim is None:
                    continue
                victim.kill()
                if await client.xpending_range(stream, group, "-", "+", 1, consumername=consumer):
                    return victim
                workers[workers.index(victim)] = respawn()  # it answered its jobs before it died: try again
                break
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    raise TimeoutError(f"no {role} worker ever died holding a pending job")


def _wait_metrics(worker: WorkerProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(worker.metrics_url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError("worker metrics endpoint never came up")


def _wait_ready(gateway: ServerProcess, policy: int, prm: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        response = httpx.get(f"{gateway.url}/readyz", timeout=5)
        body = response.json()
        if body["workers"] == {"policy": policy, "prm": prm}:
            assert response.status_code == (200 if policy and prm else 503)
            return
        time.sleep(0.3)
    raise TimeoutError(f"workers not ready: {body}")


async def _solve_many(url: str, count: int, png: bytes, seed_base: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=180) as client:
        return await asyncio.gather(
            *(
                client.post(f"{url}/solve", data={**SLOW, "seed": str(seed_base + i)}, files={"image": ("f.png", png)})
                for i in range(count)
            )
        )


def _assert_all_solved(responses: list[httpx.Response]) -> None:
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text for r in responses if r.status_code != 200
    ]
    for response in responses:
        body = response.json()
        assert body["mode"] == "slow" and body["steps"] and body["stats"]["prm_calls"] >= 1


def test_same_seed_same_result_over_memory_and_redis(
    tiny_models: dict[str, Path], redis_prefix: str, sample_png: bytes, tmp_path: Path
) -> None:
    requests = [
        SLOW,
        {**{k: v for k, v in SLOW.items() if k != "beam_width"}, "strategy": "best_of_n", "candidates": "4"},
        {"question": SLOW["question"], "mode": "quick", "max_steps": "3"},
    ]
    results = []
    for queue in ("memory", "redis"):
        env = model_env(tiny_models, **queue_env(queue, redis_prefix))
        with ServerProcess(["serve"], env, log_path=tmp_path / f"{queue}.log") as server:
            bodies = []
            for fields in requests:
                response = httpx.post(
                    f"{server.url}/solve",
                    data={**fields, "seed": "21"},
                    files={"image": ("f.png", sample_png)},
                    timeout=120,
                )
                assert response.status_code == 200, response.text
                bodies.append((response.json()["answer"], response.json()["steps"]))
        results.append(bodies)
    assert results[0] == results[1]


async def test_cluster_survives_killed_workers(
    tiny_models: dict[str, Path], private_redis: RedisServer, sample_png: bytes, tmp_path: Path
) -> None:
    env = _cluster_env(tiny_models, private_redis.url)
    log = tmp_path / "cluster.log"
    with ServerProcess(["gateway"], env, ready_path="/healthz", log_path=tmp_path / "gateway.log") as gateway:
        policy_workers = [WorkerProcess("policy", env, log) for _ in range(2)]
        prm_workers = [WorkerProcess("prm", env, log)]
        try:
            _wait_ready(gateway, policy=2, prm=1)

            # 32 concurrent slow requests; a policy worker is SIGKILLed while it holds unanswered jobs
            batch = asyncio.create_task(_solve_many(gateway.url, 32, sample_png, seed_base=100))
            victim = await _kill_worker_holding_jobs(
                private_redis.url, "policy", policy_workers, lambda: WorkerProcess("policy", env, log)
            )
            assert not batch.done(), "the kill must land while requests are in flight"
            _assert_all_solved(await batch)
            survivors = [w for w in policy_workers if w is not victim]
            for survivor in survivors:
                _wait_metrics(survivor)
            assert sum(w.metric('atomthink_queue_redeliveries_total{role="policy"}') for w in survivors) >= 1

            # the PRM worker dies holding jobs; a new one takes over what it left unacknowledged
            batch = asyncio.create_task(_solve_many(gateway.url, 16, sample_png, seed_base=200))
            victim = await _kill_worker_holding_jobs(
                private_redis.url, "prm", prm_workers, lambda: WorkerProcess("prm", env, log)
            )
            prm_workers[prm_workers.index(victim)] = prm_worker = WorkerProcess("prm", env, log)
            _assert_all_solved(await batch)
            _wait_metrics(prm_worker)
            assert prm_worker.metric('atomthink_queue_redeliveries_total{role="prm"}') >= 1

            # SIGTERM drains: the worker exits cleanly and leaves the live set at once
            for survivor in survivors:
                assert survivor.terminate() == 0
            _wait_ready(gateway, policy=0, prm=1, timeout_s=10)
        finally:
            for worker in [*policy_workers, *prm_workers]:
                worker.kill()


def test_redis_outage_gives_503_and_service_resumes(
    tiny_models: dict[str, Path], private_redis: RedisServer, sample_png: bytes, tmp_path: Path
) -> None:
    env = _cluster_env(tiny_models, private_redis.url)
    log = tmp_path / "workers.log"
    with ServerProcess(["gateway"], env, ready_path="/healthz", log_path=tmp_path / "gateway.log") as gateway:
        workers = [WorkerProcess("policy", env, log), WorkerProcess("prm", env, log)]
        try:
            _wait_ready(gateway, policy=1, prm=1)
            files = {"image": ("f.png", sample_png)}
            assert (
                httpx.post(f"{gateway.url}/solve", data={**SLOW, "seed": "1"}, files=files, timeout=60).status_code
                == 200
            )

            private_redis.stop()
            down = httpx.post(f"{gateway.url}/solve", data={**SLOW, "seed": "2"}, files=files, timeout=60)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "backend_unavailable"
            ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["ready"] is False

            private_redis.start()  # same port, empty: the queue re-creates its streams and groups
            _wait_ready(gateway, policy=1, prm=1, timeout_s=60)
            again = httpx.post(f"{gateway.url}/solve", data={**SLOW, "seed": "3"}, files=files, timeout=60)
            assert again.status_code == 200, again.text
        finally:
            for worker in workers:
                worker.kill()
