"""Faults of the production shape on the real vLLM CPU engine (``.venv-vllm``): the engine inside a worker dies
(SIGKILL of its ``EngineCore`` process) or hangs (SIGSTOP), while slow searches run through Redis.

The cluster: a gateway, a transformers PRM worker, a transformers policy worker and a policy worker on an in-process
vLLM engine, all on the shipped text policy and PRM. After the fault the vLLM worker must leave the live set
(``/readyz`` counts one policy worker less), hand its jobs back and exit with status 3; every solve is answered 200
by the healthy worker; the consumer groups end with nothing pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from harness.servers import VLLM_CPU_ENV, VLLM_PYTHON, ServerProcess, VllmServer, WorkerProcess
from research.data.engine import make_problem
from research.data.text_dominant import text_question
from tests.conftest import TEST_REDIS_URL, delete_prefix
from tests.integration.test_vllm_engine import HELDOUT_SEED, PRM, TEXT_POLICY
from workers.main import ENGINE_DEAD_EXIT

pytestmark = pytest.mark.integration

PROBE_TIMEOUT_S = 5.0


@pytest.fixture(scope="module", autouse=True)
def vllm_venv() -> None:
    if not VLLM_PYTHON.exists():
        reason = f"no vLLM engine at {VLLM_PYTHON}: run scripts/install-vllm.sh"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI installs it and must run these tests)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def base_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str], Path]]:
    """Gateway, PRM worker and a healthy transformers policy worker; each test adds its own vLLM worker."""
    logs = tmp_path_factory.mktemp("logs")
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": prefix,
           "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
           "ATOMTHINK_TORCH_THREADS": "1", "ATOMTHINK_JOB_TIMEOUT_S": "300",
           "ATOMTHINK_VISIBILITY_TIMEOUT_S": "120"}  # fmt: skip
    workers = [WorkerProcess(role, env, logs / f"{role}-worker.log") for role in ("prm", "policy")]
    try:
        with ServerProcess(["gateway"], env, log_path=logs / "gateway.log") as gateway:
            wait_for_workers(gateway, {"policy": 1, "prm": 1})
            yield gateway, env, logs
    finally:
        for worker in workers:
            worker.terminate()
        delete_prefix(TEST_REDIS_URL, prefix)


def workers_alive(gateway: ServerProcess) -> dict[str, int]:
    return dict(httpx.get(gateway.url + "/readyz", timeout=5).json()["workers"])


def wait_for_workers(gateway: ServerProcess, expected: dict[str, int], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while workers_alive(gateway) != expected:
        assert time.monotonic() < deadline, f"workers never became {expected}: {workers_alive(gateway)}"
        time.sleep(0.5)


def engine_core_pid(worker: WorkerProcess) -> int:
    """The worker's engine process (vLLM names it ``VLLM::EngineCore``), a child of the worker process."""
    children = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        if "EngineCore" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            return int(pid)
    raise AssertionError(f"no EngineCore among the children {children}")


def pending(prefix: str) -> int:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        return sum(int(client.xpending(f"{prefix}:stream:{role}", f"{prefix}:workers")["pending"])
                   for role in ("policy", "prm"))  # fmt: skip
    finally:
        client.close()


def fault_run(base: tuple[ServerProcess, dict[str, str], Path], fault: signal.Signals, name: str) -> None:
    gateway, env, logs = base
    vllm_env = {**env, **VLLM_CPU_ENV, "ATOMTHINK_POLICY_BACKEND": "vllm", "ATOMTHINK_DTYPE": "float32",
                "ATOMTHINK_VLLM_MAX_MODEL_LEN": "1024", "ATOMTHINK_VLLM_ENFORCE_EAGER": "true",
                "ATOMTHINK_VLLM_ENABLE_CHUNKED_PREFILL": "false", "ATOMTHINK_ENGINE_HEALTH_INTERVAL_S": "1",
                "ATOMTHINK_ENGINE_PROBE_TIMEOUT_S": str(PROBE_TIMEOUT_S)}  # fmt: skip
    log = logs / f"vllm-worker-{name}.log"
    worker = WorkerProcess("policy", vllm_env, log, python=VLLM_PYTHON)
    core: int | None = None
    try:
        wait_for_workers(gateway, {"policy": 2, "prm": 1})
        assert httpx.get(worker.metrics_url.replace("/metrics", "/readyz"), timeout=5).json()["state"] == "ready"
        core = engine_core_pid(worker)
        prefix = env["ATOMTHINK_KEY_PREFIX"]
        bodies = [
            {"question": text_question(make_problem(HELDOUT_SEED, 60 + i)), "mode": "slow", "strategy": "beam",
             "candidates": 2, "beam_width": 2, "max_steps": 4, "seed": i} for i in range(6)
        ]  # fmt: skip

        async def run() -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(timeout=300) as client:
                solving = asyncio.gather(*(client.post(gateway.url + "/solve", json=body) for body in bodies))
                await asyncio.sleep(1.0)  # the searches are under way on both policy workers
                os.kill(core, fault)
                return await solving, time.monotonic()

        faulted_at = time.monotonic()
        responses, answered_at = asyncio.run(run())
        code = worker.process.wait(timeout=120)
        exited_after = time.monotonic() - faulted_at
        assert code == ENGINE_DEAD_EXIT, log.read_text()[-3000:]
        assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
        assert workers_alive(gateway) == {"policy": 1, "prm": 1}
        assert pending(prefix) == 0, "every job was answered and acknowledged"
        text = log.read_text()
        assert "engine dead" in text and f"exits {ENGINE_DEAD_EXIT}" in text
        print(f"{name}: worker exited {code} {exited_after:.1f} s after the fault; all {len(bodies)} solves 200 "
              f"by {answered_at - faulted_at:.1f} s")  # fmt: skip
    finally:
        if core is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(core, signal.SIGKILL)
        worker.kill()


def test_a_killed_engine_process_takes_its_worker_out_and_loses_nothing(
    base_cluster: tuple[ServerProcess, dict[str, str], Path],
) -> None:
    fault_run(base_cluster, signal.SIGKILL, "sigkill")


def test_a_stopped_engine_process_fails_the_probe_and_its_jobs_go_elsewhere(
    base_cluster: tuple[ServerProcess, dict[str, str], Path],
) -> None:
    fault_run(base_cluster, signal.SIGSTOP, "sigstop")


# --- a PRM behind its own `vllm serve` dies and comes back ---------------------------------------------------------

PRM_RETRY_S = 6.0


def test_a_dead_prm_server_fails_searches_typed_and_they_recover_when_it_returns(tmp_path: Path) -> None:
    """The PRM server is SIGKILLed: a slow solve fails within the retry budget with a typed 503
    (``model_server_unavailable``), not a hang to the job timeout; once the server is back on its address the next
    solve is answered by the same workers, restarted by nobody."""
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": prefix,
           "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
           "ATOMTHINK_TORCH_THREADS": "1", "ATOMTHINK_JOB_TIMEOUT_S": "120"}  # fmt: skip
    body = {"question": text_question(make_problem(HELDOUT_SEED, 70)), "mode": "slow", "strategy": "beam",
            "candidates": 2, "beam_width": 2, "max_steps": 4, "seed": 1}  # fmt: skip
    server = VllmServer(PRM, "prm", log_path=tmp_path / "vllm-prm.log")
    with server:
        prm_env = {**env, "ATOMTHINK_PRM_BACKEND": "openai-completions", "ATOMTHINK_PRM_BASE_URL": server.url + "/v1",
                   "ATOMTHINK_REMOTE_RETRY_S": str(PRM_RETRY_S)}  # fmt: skip
        workers = [WorkerProcess("policy", env, tmp_path / "policy.log"),
                   WorkerProcess("prm", prm_env, tmp_path / "prm.log")]  # fmt: skip
        try:
            with ServerProcess(["gateway"], env, log_path=tmp_path / "gateway.log") as gateway:
                wait_for_workers(gateway, {"policy": 1, "prm": 1})
                before = httpx.post(gateway.url + "/solve", json=body, timeout=120)
                assert before.status_code == 200, before.text
                assert server.process is not None
                os.killpg(server.process.pid, signal.SIGKILL)
                server.process.wait(timeout=30)
                started = time.monotonic()
                down = httpx.post(gateway.url + "/solve", json=body, timeout=120)
                failed_after = time.monotonic() - started
                assert down.status_code == 503, down.text
                error = down.json()["error"]
                assert error["code"] == "job_failed" and "model_server_unavailable" in error["message"], error
                assert failed_after < 60, "failed within the retry budget, long before the job timeout"
                server.__enter__()  # the same address; nothing else restarts
                restarted = time.monotonic()
                after = httpx.post(gateway.url + "/solve", json=body, timeout=120)
                assert after.status_code == 200, after.text
                assert after.json()["answer"] == before.json()["answer"], "a seeded request replays"
                assert all(w.process.poll() is None for w in workers), "no worker restarted"
                assert pending(prefix) == 0
                print(f"prm server down: solve failed typed (503 model_server_unavailable) after {failed_after:.1f} s "
                      f"(retry budget {PRM_RETRY_S:g} s); after the restart answered 200 in "
                      f"{time.monotonic() - restarted:.1f} s")  # fmt: skip
        finally:
            for worker in workers:
                worker.terminate()
            delete_prefix(TEST_REDIS_URL, prefix)
