"""Faults of the production shape on the real vLLM CPU engine (``.venv-vllm``), one test per fault, while slow
searches run through Redis:

- the engine inside a policy worker dies (SIGKILL of its ``EngineCore`` process) or hangs (SIGSTOP, longer than the
  probe timeout): the worker leaves the live set (``/readyz`` counts one policy worker less), hands its jobs back and
  exits 3; every solve is answered 200 by the healthy worker;
- the PRM's ``vllm serve`` is SIGKILLed and started again: a solve fails with a typed 503 within the retry budget,
  and once the server is back the next one is answered by the same workers, restarted by nobody;
- a gateway gets SIGTERM (drains: its searches finish, a new one is refused typed and answered by the other gateway,
  exit 0) or SIGKILL (its clients retry on the other gateway; the jobs it left queued expire unanswered).

Each test reads ``/readyz`` before and after, and ends with the consumer groups idle: nothing waiting or pending,
and no pending entry ever older than the job timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from harness.servers import VLLM_CPU_ENV, VLLM_PYTHON, ServerProcess, VllmServer, WorkerProcess
from research.data.engine import make_problem
from research.data.text_dominant import text_question
from tests.conftest import TEST_REDIS_URL, delete_prefix
from tests.integration.test_gateway_drain import stopped
from tests.integration.test_vllm_engine import HELDOUT_SEED, PRM, TEXT_POLICY
from workers.main import ENGINE_DEAD_EXIT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]  # engine starts take minutes on a busy machine

PROBE_TIMEOUT_S = 5.0
JOB_TIMEOUT_S = 300.0
VISIBILITY_TIMEOUT_S = 120.0
PRM_RETRY_S = 6.0
READY_1 = {"ready": True, "workers": {"policy": 1, "prm": 1}, "queue": "redis"}
READY_2 = {"ready": True, "workers": {"policy": 2, "prm": 1}, "queue": "redis"}


@pytest.fixture(scope="module", autouse=True)
def vllm_venv() -> None:
    if not VLLM_PYTHON.exists():
        reason = f"no vLLM engine at {VLLM_PYTHON}: run scripts/install-vllm.sh"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI installs it and must run these tests)")
        pytest.skip(reason)


def vllm_worker_env(env: dict[str, str], cores: str | None = None) -> dict[str, str]:
    """A policy worker on an in-process vLLM engine (chunked prefill off: seeded sampling with it kills the CPU
    engine); ``cores`` pins the engine (two engines on the same cores spin against each other)."""
    pinned = {"VLLM_CPU_OMP_THREADS_BIND": cores} if cores else {}
    return {**env, **VLLM_CPU_ENV, **pinned, "ATOMTHINK_POLICY_BACKEND": "vllm", "ATOMTHINK_DTYPE": "float32",
            "ATOMTHINK_VLLM_MAX_MODEL_LEN": "1024", "ATOMTHINK_VLLM_ENFORCE_EAGER": "true",
            "ATOMTHINK_VLLM_ENABLE_CHUNKED_PREFILL": "false", "ATOMTHINK_ENGINE_HEALTH_INTERVAL_S": "1",
            "ATOMTHINK_ENGINE_PROBE_TIMEOUT_S": str(PROBE_TIMEOUT_S)}  # fmt: skip


def base_env(prefix: str, **extra: str) -> dict[str, str]:
    return {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": prefix,
            "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
            "ATOMTHINK_TORCH_THREADS": "1", "ATOMTHINK_JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
            "ATOMTHINK_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S), **extra}  # fmt: skip


def solve_body(i: int) -> dict[str, Any]:
    return {"question": text_question(make_problem(HELDOUT_SEED, 60 + i)), "mode": "slow", "strategy": "beam",
            "candidates": 2, "beam_width": 2, "max_steps": 4, "seed": i}  # fmt: skip


# --- what every test reads ------------------------------------------------------------------------------------------


def readyz(url: str) -> tuple[int, dict[str, Any]] | str:
    """``(status, body)`` of ``url``'s ``/readyz``, or the name of the transport error (a process that is gone)."""
    try:
        response = httpx.get(url + "/readyz", timeout=5)
    except httpx.TransportError as exc:
        return type(exc).__name__
    return response.status_code, response.json()


def worker_url(worker: WorkerProcess) -> str:
    return worker.metrics_url.removesuffix("/metrics")


def workers_alive(gateway: ServerProcess) -> dict[str, int]:
    return dict(httpx.get(gateway.url + "/readyz", timeout=5).json()["workers"])


def wait_for_workers(gateway: ServerProcess, expected: dict[str, int], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while workers_alive(gateway) != expected:
        assert time.monotonic() < deadline, f"workers never became {expected}: {workers_alive(gateway)}"
        time.sleep(0.5)


def groups_idle(prefix: str, timeout_s: float = VISIBILITY_TIMEOUT_S + 60) -> dict[str, Any]:
    """Wait (at most ``timeout_s``) until both streams hold no job, waiting or pending. At every look, no pending entry
    may be older than the job timeout (a job nobody will ever acknowledge). Returns what was seen.

    The wait outlasts the visibility timeout: an entry Redis delivered to a consumer whose read was cut (a worker
    resumed from SIGSTOP whose read timed out as the reply came) is pending until a worker claims it after that
    timeout, which is the guarantee under test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    oldest_ms = 0
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            left: dict[str, int] = {}
            for role in ("policy", "prm"):
                stream = f"{prefix}:stream:{role}"
                left[role] = int(client.xlen(stream))  # acknowledged jobs are deleted from the stream
                if client.exists(stream):
                    entries = client.xpending_range(stream, f"{prefix}:workers", min="-", max="+", count=1000)
                    oldest_ms = max([oldest_ms, *(int(e["time_since_delivered"]) for e in entries)])
            assert oldest_ms < JOB_TIMEOUT_S * 1000, f"a pending entry {oldest_ms} ms old: nobody will ack it"
            if not any(left.values()) or time.monotonic() > deadline:
                return {"left": left, "oldest_pending_ms": oldest_ms}
            time.sleep(0.5)
    finally:
        client.close()


def exit_clock(process: subprocess.Popen[bytes]) -> threading.Thread:
    """A thread that waits for ``process`` and notes when it exited (``thread.exited_at``, monotonic)."""

    def wait() -> None:
        process.wait()
        thread.exited_at = time.monotonic()  # type: ignore[attr-defined]

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def assert_idle(prefix: str) -> dict[str, Any]:
    seen = groups_idle(prefix)
    assert seen["left"] == {"policy": 0, "prm": 0}, f"jobs left in the streams: {seen}"
    return seen


@dataclass
class Watch:
    """A thread that notes, every 0.1 s, the gateway's live policy workers and a worker's ``/healthz`` state, from
    ``started`` on; each change once, with its time."""

    gateway: ServerProcess
    worker: WorkerProcess
    started: float = field(default_factory=time.monotonic)
    changes: list[tuple[float, str]] = field(default_factory=list)
    exited: float | None = None
    """When the worker process was first seen gone (seconds after ``started``)."""
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = ""
        while not self._stop.is_set():
            try:
                live = workers_alive(self.gateway).get("policy")
            except httpx.HTTPError as exc:
                live = type(exc).__name__  # type: ignore[assignment]
            try:
                state = httpx.get(worker_url(self.worker) + "/healthz", timeout=2).json()["state"]
            except httpx.HTTPError as exc:
                state = type(exc).__name__
            now = f"gateway counts {live} policy workers; worker {state}"
            if self.exited is None and self.worker.process.poll() is not None:
                self.exited = time.monotonic() - self.started
                now += f"; worker process exited {self.worker.process.returncode}"
            if now != last:
                self.changes.append((time.monotonic() - self.started, now))
                last = now
            time.sleep(0.1)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.changes

    def first(self, text: str) -> float | None:
        return next((t for t, change in self.changes if text in change), None)


# --- an engine that dies or hangs inside its worker -----------------------------------------------------------------


@pytest.fixture(scope="module")
def base_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str], Path]]:
    """Gateway, PRM worker and a healthy transformers policy worker; each test adds its own vLLM worker."""
    logs = tmp_path_factory.mktemp("logs")
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    env = base_env(prefix)
    workers = [WorkerProcess(role, env, logs / f"{role}-worker.log") for role in ("prm", "policy")]
    try:
        with ServerProcess(["gateway"], env, log_path=logs / "gateway.log") as gateway:
            wait_for_workers(gateway, {"policy": 1, "prm": 1})
            yield gateway, env, logs
    finally:
        for worker in workers:
            worker.terminate()
        delete_prefix(TEST_REDIS_URL, prefix)


def engine_core_pid(worker: WorkerProcess) -> int:
    """The worker's engine process (vLLM names it ``VLLM::EngineCore``), a child of the worker process."""
    children = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        if "EngineCore" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            return int(pid)
    raise AssertionError(f"no EngineCore among the children {children}")


def fault_run(base: tuple[ServerProcess, dict[str, str], Path], fault: signal.Signals, name: str) -> None:
    gateway, env, logs = base
    log = logs / f"vllm-worker-{name}.log"
    worker = WorkerProcess("policy", vllm_worker_env(env), log, python=VLLM_PYTHON)
    core: int | None = None
    try:
        wait_for_workers(gateway, {"policy": 2, "prm": 1})
        gateway_before, worker_before = readyz(gateway.url), readyz(worker_url(worker))
        assert gateway_before == (200, READY_2), gateway_before
        assert isinstance(worker_before, tuple) and worker_before[0] == 200, worker_before
        assert worker_before[1]["state"] == "ready"
        core = engine_core_pid(worker)
        bodies = [solve_body(i) for i in range(6)]
        watch: Watch | None = None

        async def run() -> tuple[list[httpx.Response], float]:
            nonlocal watch
            async with httpx.AsyncClient(timeout=JOB_TIMEOUT_S) as client:
                solving = asyncio.gather(*(client.post(gateway.url + "/solve", json=body) for body in bodies))
                await asyncio.sleep(1.0)  # the searches are under way on both policy workers
                watch = Watch(gateway, worker)
                os.kill(core, fault)
                return await solving, time.monotonic()

        responses, answered_at = asyncio.run(run())
        assert watch is not None
        code = worker.process.wait(timeout=120)
        time.sleep(0.3)
        changes = watch.stop()
        exited_after = watch.exited
        assert exited_after is not None
        assert code == ENGINE_DEAD_EXIT, log.read_text()[-3000:]
        assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
        gateway_after, worker_after = readyz(gateway.url), readyz(worker_url(worker))
        assert gateway_after == (200, READY_1), gateway_after
        assert isinstance(worker_after, str), f"the worker's endpoint is gone with it: {worker_after}"
        left_live_set = watch.first("counts 1 policy")
        assert left_live_set is not None and left_live_set <= exited_after + 0.5, changes
        idle = assert_idle(env["ATOMTHINK_KEY_PREFIX"])
        text = log.read_text()
        assert "engine dead" in text and f"exits {ENGINE_DEAD_EXIT}" in text
        print(f"\n{name}: worker exited {code} {exited_after:.1f} s after the fault (out of the gateway's live set "
              f"after {left_live_set:.1f} s); all {len(bodies)} solves 200 by {answered_at - watch.started:.1f} s; "
              f"gateway /readyz before {gateway_before[1]['workers']}, after {gateway_after[1]['workers']}; worker "
              f"/readyz before {worker_before[1]['state']}, after {worker_after}; groups idle {idle}")  # fmt: skip
        for at, change in changes:
            print(f"  {at:5.1f} s  {change}")
    finally:
        if core is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(core, signal.SIGKILL)
        worker.kill()


def test_a_killed_engine_process_takes_its_worker_out_and_loses_nothing(
    base_cluster: tuple[ServerProcess, dict[str, str], Path],
) -> None:
    fault_run(base_cluster, signal.SIGKILL, "engine SIGKILL")


def test_a_stopped_engine_process_fails_the_probe_and_its_jobs_go_elsewhere(
    base_cluster: tuple[ServerProcess, dict[str, str], Path],
) -> None:
    fault_run(base_cluster, signal.SIGSTOP, "engine SIGSTOP")


# --- the vLLM shape: a vLLM policy worker, a PRM worker in front of `vllm serve`, gateways ---------------------------


@dataclass
class Shape:
    gateway: ServerProcess
    """The gateway that stays (the load balancer's other one)."""
    env: dict[str, str]
    logs: Path
    prm_server: VllmServer
    policy: WorkerProcess
    prm: WorkerProcess

    @property
    def prefix(self) -> str:
        return self.env["ATOMTHINK_KEY_PREFIX"]

    def gateway_process(self, name: str, **extra: str) -> ServerProcess:
        gateway = ServerProcess(["gateway"], {**self.env, **extra}, log_path=self.logs / f"gateway-{name}.log")
        return gateway.__enter__()

    def all_ready(self) -> None:
        """Both workers take jobs and the gateway counts them (a stopped worker's heartbeat lapses)."""
        wait_for_workers(self.gateway, {"policy": 1, "prm": 1}, timeout_s=60)
        for worker in (self.policy, self.prm):
            assert worker.process.poll() is None, f"{worker.role} worker exited {worker.process.returncode}"
            state = readyz(worker_url(worker))
            assert isinstance(state, tuple) and state[0] == 200, state


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shape]:
    logs = tmp_path_factory.mktemp("shape")
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    env = base_env(prefix, ATOMTHINK_REMOTE_RETRY_S=str(PRM_RETRY_S))
    server = VllmServer(PRM, "prm", log_path=logs / "vllm-prm.log")
    server.env["VLLM_CPU_OMP_THREADS_BIND"] = "0"  # the PRM engine on core 0, the policy engine on core 1
    workers: list[WorkerProcess] = []
    try:
        with server:
            prm_env = {**env, "ATOMTHINK_PRM_BACKEND": "openai-completions",
                       "ATOMTHINK_PRM_BASE_URL": server.url + "/v1"}  # fmt: skip
            workers = [WorkerProcess("policy", vllm_worker_env(env, "1"), logs / "policy.log", python=VLLM_PYTHON),
                       WorkerProcess("prm", prm_env, logs / "prm.log")]  # fmt: skip
            gateway = ServerProcess(["gateway"], env, ready_path="/healthz", log_path=logs / "gateway.log")
            with gateway:  # up at once; ready (/readyz) once the workers are: an engine takes minutes to start
                wait_for_workers(gateway, {"policy": 1, "prm": 1})
                yield Shape(gateway, env, logs, server, workers[0], workers[1])
    finally:
        for worker in workers:
            worker.kill()
        delete_prefix(TEST_REDIS_URL, prefix)


def test_a_dead_prm_server_fails_searches_typed_and_they_recover_when_it_returns(shape: Shape) -> None:
    """The PRM's ``vllm serve`` is SIGKILLed: a slow solve fails within the retry budget with a typed 503
    (``model_server_unavailable``), not a hang to the job timeout; once the server is back on its address the next
    solve is answered by the same workers, restarted by nobody."""
    shape.all_ready()
    gateway, server = shape.gateway, shape.prm_server
    before_ready = readyz(gateway.url)
    body = solve_body(10)
    before = httpx.post(gateway.url + "/solve", json=body, timeout=JOB_TIMEOUT_S)
    assert before.status_code == 200, before.text
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)
    killed = time.monotonic()
    down = httpx.post(gateway.url + "/solve", json=body, timeout=JOB_TIMEOUT_S)
    failed_after = time.monotonic() - killed
    assert down.status_code == 503, down.text
    error = down.json()["error"]
    assert error["code"] == "job_failed" and "model_server_unavailable" in error["message"], error
    assert failed_after < 60, "failed within the retry budget, long before the job timeout"
    down_ready = readyz(gateway.url)
    server.__enter__()  # the same address; nothing else restarts
    restarted = time.monotonic()
    after = httpx.post(gateway.url + "/solve", json=body, timeout=JOB_TIMEOUT_S)
    assert after.status_code == 200, after.text
    assert after.json()["answer"] == before.json()["answer"], "a seeded request replays"
    assert all(w.process.poll() is None for w in (shape.policy, shape.prm)), "no worker exited or restarted"
    after_ready = readyz(gateway.url)
    assert before_ready == after_ready == (200, READY_1), after_ready
    shape.all_ready()
    idle = assert_idle(shape.prefix)
    print(f"\nPRM server SIGKILL: no worker exited; the solve failed typed (503 job_failed: model_server_unavailable) "
          f"{failed_after:.1f} s after the kill (retry budget {PRM_RETRY_S:g} s); after the restart (back "
          f"{restarted - killed:.1f} s after the kill) answered 200 in {time.monotonic() - restarted:.1f} s, the same "
          f"answer; gateway /readyz before {before_ready}, server down {down_ready}, after {after_ready}; "
          f"groups idle {idle}")  # fmt: skip


async def through_lb(
    client: httpx.AsyncClient, first: str, other: str, body: dict[str, Any]
) -> tuple[httpx.Response, str]:
    """What a load balancer does: send to ``first``; on a cut or refused connection or a 503 ``gateway_draining``,
    once more to ``other``. Returns the answer and how it came (``first``, or why it was rerouted)."""
    try:
        response = await client.post(first + "/solve", json=body)
    except httpx.TransportError as exc:
        return await client.post(other + "/solve", json=body), type(exc).__name__
    if response.status_code == 503 and response.json()["error"]["code"] == "gateway_draining":
        assert response.headers["Retry-After"] == "1"
        return await client.post(other + "/solve", json=body), "503 gateway_draining"
    return response, "first"


def test_a_gateway_on_sigterm_drains_and_its_new_requests_go_to_the_other(shape: Shape) -> None:
    """SIGTERM while two searches wait on the PRM: they finish (200), a new request is refused with a typed 503 (the
    load balancer sends it to the other gateway: 200), ``/readyz`` says ``draining``, the gateway exits 0."""
    shape.all_ready()
    victim = shape.gateway_process("sigterm", ATOMTHINK_DRAIN_GRACE_S="120")
    assert victim.process is not None
    clock = exit_clock(victim.process)
    before = readyz(victim.url), readyz(shape.gateway.url)
    assert before[0] == before[1] == (200, READY_1), before

    async def scenario() -> tuple[list[tuple[httpx.Response, str]], tuple[httpx.Response, str], Any, float]:
        async with httpx.AsyncClient(timeout=JOB_TIMEOUT_S) as client:
            with stopped(shape.prm):  # both searches wait for their first scores
                running = [asyncio.create_task(through_lb(client, victim.url, shape.gateway.url, solve_body(20 + i)))
                           for i in range(2)]  # fmt: skip
                await asyncio.sleep(2.0)
                signalled = time.monotonic()
                os.kill(victim.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
                await asyncio.sleep(0.5)
                new = asyncio.create_task(through_lb(client, victim.url, shape.gateway.url, solve_body(22)))
                await asyncio.sleep(1.0)
                draining = await asyncio.to_thread(readyz, victim.url)
            return list(await asyncio.gather(*running)), await new, draining, signalled

    finished, new, draining, signalled = asyncio.run(scenario())
    clock.join(timeout=60)
    code = victim.process.poll()
    exited_after = clock.exited_at - signalled  # type: ignore[attr-defined]
    try:
        assert [(r.status_code, how) for r, how in finished] == [(200, "first")] * 2, [r.text for r, _ in finished]
        assert (new[0].status_code, new[1]) == (200, "503 gateway_draining"), new[0].text
        assert isinstance(draining, tuple) and draining[0] == 503 and draining[1]["draining"] is True, draining
        assert code == 0, victim.log_path.read_text()[-2000:] if victim.log_path else code
        after = readyz(victim.url), readyz(shape.gateway.url)
        assert isinstance(after[0], str), after
        shape.all_ready()
        idle = assert_idle(shape.prefix)
        assert all(w.process.poll() is None for w in (shape.policy, shape.prm)), "no worker exited"
    finally:
        victim.stop()
    print(f"\ngateway SIGTERM: exited {code} {exited_after:.1f} s after the signal (grace 120 s); the 2 running "
          f"searches 200 on it; the new one refused 503 gateway_draining and answered 200 by the other gateway; "
          f"/readyz before {before[0]}, draining {draining}, after {after[0]} (the other gateway: {after[1]}); "
          f"groups idle {idle}")  # fmt: skip


def test_a_killed_gateways_clients_retry_and_its_jobs_expire(shape: Shape) -> None:
    """SIGKILL while three searches wait on the PRM: their clients' connections are cut and the load balancer sends
    them to the other gateway (200); the jobs the dead gateway left queued expire (the PRM worker acknowledges them
    without computing them), its reply stream has a TTL, the groups end idle."""
    shape.all_ready()
    victim_timeout_s = 20.0
    victim = shape.gateway_process("sigkill", ATOMTHINK_JOB_TIMEOUT_S=str(victim_timeout_s))
    assert victim.process is not None
    before = readyz(victim.url), readyz(shape.gateway.url)
    assert before[0] == before[1] == (200, READY_1), before
    expired_metric = 'atomthink_worker_jobs_total{outcome="expired",role="prm"}'
    expired_before = shape.prm.metric(expired_metric)
    client_redis = redis.Redis.from_url(TEST_REDIS_URL)

    async def scenario() -> tuple[list[tuple[httpx.Response, str]], int, list[int]]:
        async with httpx.AsyncClient(timeout=JOB_TIMEOUT_S) as client:
            with stopped(shape.prm):  # the searches' PRM jobs wait in the stream
                solves = [asyncio.create_task(through_lb(client, victim.url, shape.gateway.url, solve_body(30 + i)))
                          for i in range(3)]  # fmt: skip
                prm_stream, waited = f"{shape.prefix}:stream:prm", time.monotonic() + 120
                while int(client_redis.xlen(prm_stream)) < 3 and time.monotonic() < waited:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # each search's first step, then its PRM job
                os.killpg(victim.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                await asyncio.to_thread(victim.process.wait, 10)  # type: ignore[union-attr]
                queued = int(client_redis.xlen(f"{shape.prefix}:stream:prm"))
                ttls = [int(client_redis.ttl(k)) for k in client_redis.scan_iter(match=f"{shape.prefix}:reply:*")]
                await asyncio.sleep(victim_timeout_s + 1)  # every job it enqueued (before the kill) has expired
            return list(await asyncio.gather(*solves)), queued, ttls

    try:
        answers, queued, ttls = asyncio.run(scenario())
    finally:
        client_redis.close()
        victim.stop()
    code = victim.process.returncode
    assert code == -signal.SIGKILL
    assert [(r.status_code, how != "first") for r, how in answers] == [(200, True)] * 3, [
        (r.status_code, how, r.text[:200]) for r, how in answers
    ]
    assert queued >= 3, "the dead gateway's PRM jobs wait in the stream"
    assert ttls and all(0 < ttl <= 3600 for ttl in ttls), f"every reply stream expires, the dead one's too: {ttls}"
    idle = assert_idle(shape.prefix)
    expired = shape.prm.metric(expired_metric) - expired_before
    assert expired >= 3, f"only {expired} jobs acknowledged as expired"
    shape.all_ready()
    after = readyz(victim.url), readyz(shape.gateway.url)
    assert isinstance(after[0], str) and after[1] == before[1], after
    print(f"\ngateway SIGKILL: exit {code} (killed); its 3 clients' connections cut ({answers[0][1]}), all 3 "
          f"answered 200 by the other gateway; {queued} PRM jobs it left queued, {expired:.0f} acknowledged as expired "
          f"(job timeout {victim_timeout_s:g} s); reply stream TTLs {ttls}; /readyz before {before[0]}, after "
          f"{after[0]} (the other gateway: {after[1]}); groups idle {idle}")  # fmt: skip
