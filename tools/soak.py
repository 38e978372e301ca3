"""Soak: mixed load on the Redis deployment, with a policy worker killed twice and Redis restarted once.

Starts its own private ``redis-server`` on a free port (never the shared one), a gateway, two policy workers and
one PRM worker (shipped models, API keys on), then drives ``--concurrency`` clients of mixed requests (direct, cot,
quick, slow beam / best-of-N / majority, with and without an image, a few invalid ones) for ``--minutes``.
Faults: at 20% and 70% of the run a policy worker is SIGKILLed and restarted 10 s later; at 45% Redis is stopped
and started again on the same port. Prints:

- requests answered / refused with a typed error (by code) / lost (no answer within the client deadline, a
  transport error, or a body that is not the typed error shape);
- resident memory of each process after warm-up and at the end (a restarted worker: after its own warm-up);
- Redis key count idle (after one warm-up request, once its TTLs ran out) and after the load, once the TTLs of
  what the load left (images, cancel markers, quota windows) ran out; exit status 1 if any request was lost or the
  count does not come back to idle.

    python tools/soak.py --minutes 10

``--deployment vllm`` soaks the production shape instead (issue 27): two gateways behind the load driver (which, like
a load balancer, sends each request to the next gateway and retries once on the other one when a gateway refused
the connection, cut it, or answered 503 ``gateway_draining``), two policy workers on in-process vLLM engines
(``atomthink-tiny-text-policy``) and a PRM worker in front of a ``vllm serve`` PRM, text-dominant questions. The
driver also plays the supervisor: a process that exits is restarted (a worker whose engine died exits 3). Faults on
a schedule: engine process SIGKILL (5%), engine SIGSTOP past the job timeout (15%), PRM server killed and started
again (30%), a gateway SIGTERM (55%) and the other SIGKILLed (70%, once the first is back), Redis restarted (85%);
a fault whose turn comes while the one before is still under way (a server starting again) follows it.

    .venv/bin/python tools/soak.py --deployment vllm --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from harness.servers import (  # noqa: E402
    VLLM_CPU_ENV,
    VLLM_PYTHON,
    RedisServer,
    ServerProcess,
    VllmServer,
    WorkerProcess,
)
from research.data.engine import make_problem  # noqa: E402
from research.data.text_dominant import text_question  # noqa: E402

TEXT_POLICY = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
PRM = REPO_ROOT / "models" / "atomthink-tiny-prm"

KEY = "soak-key-0123456789"
FIGURE = (REPO_ROOT / "examples" / "figure.png").read_bytes()
QUESTION = (REPO_ROOT / "examples" / "question.txt").read_text().strip()
REQUESTS: list[dict[str, Any]] = [
    {"mode": "direct"},
    {"mode": "cot"},
    {"mode": "quick"},
    {"mode": "quick", "max_steps": 4},
    {"mode": "slow", "strategy": "beam", "candidates": 3, "beam_width": 2, "max_steps": 6},
    {"mode": "slow", "strategy": "best_of_n", "candidates": 4, "max_steps": 6},
    {"mode": "slow", "strategy": "majority", "candidates": 4, "max_steps": 6},
    {"mode": "slow", "strategy": "weighted_majority", "candidates": 3, "max_steps": 6},
]
INVALID: list[dict[str, Any]] = [
    {"mode": "quick", "strategy": "beam"},  # 422: strategy is slow-only
    {"mode": "slow", "candidates": 999},  # 422: out of range
    {"question": "x " * 1900, "mode": "quick"},  # 400: over the policy's context window
]


@dataclass
class Tally:
    answered: int = 0
    truncated: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class MemoryTrack:
    """RSS samples of one process slot; a restarted process starts a new track."""

    name: str
    pid: int
    started: float
    warm: int | None = None
    last: int | None = None
    killed: bool = False


class Cluster:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.redis = RedisServer(workdir)
        self.gateway: ServerProcess | None = None
        self.policy: list[WorkerProcess] = []
        self.prm: list[WorkerProcess] = []
        self.tracks: list[MemoryTrack] = []

    def worker(self, role: str) -> WorkerProcess:
        process = WorkerProcess(role, {**self.env, "ATOMTHINK_REDIS_URL": self.redis.url}, self.workdir / "workers.log")
        index = sum(1 for t in self.tracks if t.name.startswith(role))
        self.tracks.append(MemoryTrack(f"{role}-worker#{index}", process.process.pid, time.monotonic()))
        return process

    def start(self) -> None:
        self.redis.start()
        env = {**self.env, "ATOMTHINK_REDIS_URL": self.redis.url}
        self.gateway = ServerProcess(["gateway"], env, ready_path="/healthz", log_path=self.workdir / "gateway.log")
        self.gateway.__enter__()
        assert self.gateway.process is not None and self.redis.process is not None
        self.tracks.append(MemoryTrack("gateway", self.gateway.process.pid, time.monotonic()))
        self.policy = [self.worker("policy"), self.worker("policy")]
        self.prm = [self.worker("prm")]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ready = httpx.get(f"{self.gateway.url}/readyz", timeout=5).json()
            if ready.get("workers") == {"policy": 2, "prm": 1}:
                return
            time.sleep(0.5)
        raise TimeoutError("workers not ready")

    def stop(self) -> None:
        for worker in self.policy + self.prm:
            worker.kill()
        if self.gateway is not None:
            self.gateway.stop()
        self.redis.stop()

    def sample_memory(self, warmup_s: float) -> None:
        now = time.monotonic()
        for track in self.tracks:
            value = rss_kib(track.pid)
            if value is None:
                continue
            track.last = value
            if track.warm is None and now - track.started >= warmup_s:
                track.warm = value

    def redis_keys(self) -> tuple[int, collections.Counter[str]]:
        client = redis.Redis.from_url(self.redis.url)
        try:
            kinds: collections.Counter[str] = collections.Counter()
            for key in client.scan_iter(count=1000):
                parts = key.decode().split(":")
                kinds[parts[1] if len(parts) > 1 else parts[0]] += 1
            return int(client.dbsize()), kinds
        finally:
            client.close()

    def keys_of(self, kinds: set[str], limit: int = 5) -> list[str]:
        """Some keys of the given kinds with their TTL (what is left over, for the report)."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            found = []
            for key in client.scan_iter(count=1000):
                name = key.decode()
                if name.split(":")[1] in kinds and len(found) < limit:
                    found.append(f"{name} (ttl {client.ttl(key)} s)")
            return found
        finally:
            client.close()


class VllmCluster(Cluster):
    """The production shape on the vLLM CPU engine: two gateways, two engine policy workers, a PRM worker in front of
    a ``vllm serve`` PRM (pinned to core 0; the policy engines to core 1)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(workdir, env)
        self.gateways: list[ServerProcess] = []
        self.prm_server = VllmServer(PRM, "prm", log_path=workdir / "prm-server.log")
        self.prm_server.env["VLLM_CPU_OMP_THREADS_BIND"] = "0"
        self.restarts: collections.Counter[str] = collections.Counter()
        self.exits: list[str] = []

    def worker(self, role: str) -> WorkerProcess:
        env = {**self.env, "ATOMTHINK_REDIS_URL": self.redis.url}
        python = None
        if role == "policy":
            env |= {**VLLM_CPU_ENV, "ATOMTHINK_POLICY_BACKEND": "vllm", "ATOMTHINK_DTYPE": "float32",
                    "ATOMTHINK_VLLM_MAX_MODEL_LEN": "1024", "ATOMTHINK_VLLM_ENFORCE_EAGER": "true",
                    "ATOMTHINK_VLLM_ENABLE_CHUNKED_PREFILL": "false", "VLLM_CPU_OMP_THREADS_BIND": "1"}  # fmt: skip
            python = VLLM_PYTHON
        process = WorkerProcess(role, env, self.workdir / "workers.log", python=python)
        index = sum(1 for t in self.tracks if t.name.startswith(role))
        self.tracks.append(MemoryTrack(f"{role}-worker#{index}", process.process.pid, time.monotonic()))
        return process

    def new_gateway(self, index: int) -> ServerProcess:
        env = {**self.env, "ATOMTHINK_REDIS_URL": self.redis.url}
        gateway = ServerProcess(["gateway"], env, ready_path="/healthz", log_path=self.workdir / f"gateway{index}.log")
        gateway.__enter__()
        assert gateway.process is not None
        self.tracks.append(MemoryTrack(f"gateway#{index}", gateway.process.pid, time.monotonic()))
        return gateway

    def start(self) -> None:
        self.prm_server.__enter__()
        assert self.prm_server.process is not None
        self.tracks.append(MemoryTrack("prm-server", self.prm_server.process.pid, time.monotonic()))
        self.env["ATOMTHINK_PRM_BASE_URL"] = self.prm_server.url + "/v1"
        self.redis.start()
        self.gateways = [self.new_gateway(0), self.new_gateway(1)]
        self.gateway = self.gateways[0]
        self.policy = [self.worker("policy"), self.worker("policy")]
        self.prm = [self.worker("prm")]
        self.wait_workers(900)

    def wait_workers(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            ready = httpx.get(f"{self.gateways[0].url}/readyz", timeout=5).json()
            if ready.get("workers") == {"policy": len(self.policy), "prm": len(self.prm)}:
                return
            if any(w.process.poll() is not None for w in self.policy + self.prm):
                raise RuntimeError(f"a worker exited while starting; logs in {self.workdir}")
            time.sleep(1)
        raise TimeoutError("workers not ready")

    def stop(self) -> None:
        for worker in self.policy + self.prm:
            reap(worker)
        for gateway in self.gateways:
            gateway.stop()
        self.prm_server.stop()
        self.redis.stop()

    def mark_gone(self, pid: int) -> None:
        for track in self.tracks:
            if track.pid == pid:
                track.killed = True

    def sample_memory(self, warmup_s: float) -> None:
        """Also the engine processes (``VLLM::EngineCore``, children of the policy workers and of the PRM server):
        they hold the weights and the KV cache."""
        known = {track.pid for track in self.tracks}
        owners = [(f"policy-engine#{i}", w.process.pid) for i, w in enumerate(self.policy)]
        if self.prm_server.process is not None:
            owners.append(("prm-server-engine", self.prm_server.process.pid))
        for name, parent in owners:
            core = engine_core_of(parent)
            if core is not None and core not in known:
                index = sum(1 for t in self.tracks if t.name.startswith(name.split("#")[0]))
                self.tracks.append(MemoryTrack(f"{name.split('#')[0]}#{index}", core, time.monotonic()))
        super().sample_memory(warmup_s)
        for track in self.tracks:
            if rss_kib(track.pid) is None:
                track.killed = True  # exited, killed or restarted: not alive at the end

    def pending(self) -> dict[str, tuple[int, int]]:
        """Per stream: entries delivered and not acknowledged, and the oldest one's idle time (ms)."""
        client = redis.Redis.from_url(self.redis.url)
        try:
            found = {}
            for role in ("policy", "prm"):
                stream = f"{self.env['ATOMTHINK_KEY_PREFIX']}:stream:{role}"
                if not client.exists(stream):
                    found[role] = (0, 0)
                    continue
                entries = client.xpending_range(stream, f"{self.env['ATOMTHINK_KEY_PREFIX']}:workers", "-", "+", 1000)
                found[role] = (len(entries), max((int(e["time_since_delivered"]) for e in entries), default=0))
            return found
        finally:
            client.close()

    def reply_ttls(self) -> dict[str, int]:
        client = redis.Redis.from_url(self.redis.url)
        try:
            pattern = f"{self.env['ATOMTHINK_KEY_PREFIX']}:reply:*"
            return {key.decode().rsplit(":", 1)[1]: int(client.ttl(key)) for key in client.scan_iter(match=pattern)}
        finally:
            client.close()


def reap(worker: WorkerProcess) -> None:
    """Kill what is left of a worker's process group (a stopped engine process outlives its worker)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.process.pid, signal.SIGKILL)
        os.killpg(worker.process.pid, signal.SIGCONT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.process.wait(timeout=10)


def engine_core_pid(worker: WorkerProcess) -> int | None:
    return engine_core_of(worker.process.pid)


def engine_core_of(parent: int) -> int | None:
    """The ``VLLM::EngineCore`` child of ``parent`` (a worker with an in-process engine, a ``vllm serve``)."""
    children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    for pid in children:
        with contextlib.suppress(OSError):
            if "EngineCore" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                return int(pid)
    return None


async def supervise(cluster: VllmCluster, stop_at: float, started: float, log: list[str]) -> None:
    """A supervisor's job (k8s, compose ``restart``): restart a worker or gateway whose process exited."""
    while time.monotonic() < stop_at:
        for role, slots in (("policy", cluster.policy), ("prm", cluster.prm)):
            for i, worker in enumerate(slots):
                code = worker.process.poll()
                if code is not None:
                    cluster.mark_gone(worker.process.pid)
                    await asyncio.to_thread(reap, worker)
                    log.append(f"{time.monotonic() - started:6.0f} s  {role} worker pid {worker.process.pid} exited "
                               f"{code}: restarted")  # fmt: skip
                    cluster.exits.append(f"{role} worker exit {code}")
                    slots[i] = cluster.worker(role)
                    cluster.restarts[role] += 1
        for i, gateway in enumerate(cluster.gateways):
            assert gateway.process is not None
            code = gateway.process.poll()
            if code is not None:
                cluster.mark_gone(gateway.process.pid)
                log.append(f"{time.monotonic() - started:6.0f} s  gateway#{i} exited {code}: restarted")
                cluster.exits.append(f"gateway exit {code}")
                cluster.gateways[i] = await asyncio.to_thread(cluster.new_gateway, i)
                cluster.restarts["gateway"] += 1
        await asyncio.sleep(1)


REROUTE = {"gateway_draining"}
"""Typed refusals a load balancer sends to another gateway."""


async def lb_client_loop(
    cluster: VllmCluster, tally: Tally, stop_at: float, deadline_ms: int, rng: random.Random, rerouted: list[int]
) -> None:
    """Text-dominant questions, each sent to the next gateway; retried once on the other gateway when the first
    refused the connection, cut it (a killed gateway) or answered ``gateway_draining``."""
    turn = rng.randrange(2)
    async with httpx.AsyncClient(timeout=deadline_ms / 1000 + 30) as client:
        while time.monotonic() < stop_at:
            spec = dict(rng.choice(INVALID) if rng.random() < 0.05 else rng.choice(REQUESTS))
            question = text_question(make_problem(7, rng.randrange(100_000)))
            body = {"question": question, "seed": rng.randrange(10_000), "deadline_ms": deadline_ms, **spec}
            started = time.monotonic()
            response: httpx.Response | None = None
            failure = ""
            for attempt in range(2):
                turn += 1
                url = cluster.gateways[turn % 2].url
                try:
                    response = await client.post(f"{url}/solve", json=body, headers={"authorization": f"Bearer {KEY}"})
                except httpx.TransportError as exc:
                    failure, response = f"{spec.get('mode')}: {type(exc).__name__}", None
                    if attempt == 0:
                        rerouted[0] += 1
                        continue
                    break
                if attempt == 0 and response.status_code == 503 and _code(response) in REROUTE:
                    rerouted[0] += 1
                    continue
                break
            if response is None:
                tally.lost.append(failure)
                await asyncio.sleep(1)  # neither gateway took it: no tight loop of refused connections
                continue
            tally.latencies.append(time.monotonic() - started)
            record(tally, response, spec)
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


def _code(response: httpx.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    return payload["error"]["code"] if _typed_error(payload) else None


def record(tally: Tally, response: httpx.Response, spec: dict[str, Any]) -> None:
    try:
        payload = response.json()
    except ValueError:
        tally.lost.append(f"{response.status_code}: not JSON")
        return
    if response.status_code == 200 and "answer" in payload:
        tally.answered += 1
        tally.truncated += bool(payload.get("truncated"))
    elif response.status_code >= 400 and _typed_error(payload):
        tally.refused[f"{response.status_code} {payload['error']['code']}"] += 1
    else:
        tally.lost.append(f"{response.status_code}: {response.text[:120]}")


async def vllm_faults(cluster: VllmCluster, duration_s: float, started: float, log: list[str], stop_s: float) -> None:
    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + fraction * duration_s - time.monotonic()))

    def note(text: str) -> None:
        log.append(f"{time.monotonic() - started:6.0f} s  {text}")

    async def gateways_up(limit_s: float = 120) -> None:
        """Until both gateways answer (the supervisor restarted one that exited): never both down at once."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if all(g.process is not None and g.process.poll() is None for g in cluster.gateways):
                return
            await asyncio.sleep(1)

    await at(0.05)
    core = engine_core_pid(cluster.policy[0])
    if core is not None:
        os.kill(core, signal.SIGKILL)
        note(f"SIGKILL engine process {core} of policy worker pid {cluster.policy[0].process.pid}")
    await at(0.15)
    worker = cluster.policy[1]
    core = engine_core_pid(worker)
    if core is not None:
        os.kill(core, signal.SIGSTOP)
        note(f"SIGSTOP engine process {core} of policy worker pid {worker.process.pid} for {stop_s:g} s")
        await asyncio.sleep(stop_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(core, signal.SIGCONT)
        note("SIGCONT (the worker restarted by then is a new process)")
    await at(0.30)
    assert cluster.prm_server.process is not None
    os.killpg(cluster.prm_server.process.pid, signal.SIGKILL)
    cluster.mark_gone(cluster.prm_server.process.pid)
    note("PRM server SIGKILLed")
    await asyncio.sleep(5)
    await asyncio.to_thread(cluster.prm_server.__enter__)
    assert cluster.prm_server.process is not None
    cluster.tracks.append(MemoryTrack("prm-server#1", cluster.prm_server.process.pid, time.monotonic()))
    note("PRM server started again on its address")
    await at(0.55)
    gateway = cluster.gateways[0]
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    note(f"SIGTERM gateway#0 pid {gateway.process.pid} (drains, exits; the supervisor starts a new one)")
    await at(0.70)
    await gateways_up()
    gateway = cluster.gateways[1]
    assert gateway.process is not None
    os.killpg(gateway.process.pid, signal.SIGKILL)
    cluster.mark_gone(gateway.process.pid)
    note(f"SIGKILL gateway#1 pid {gateway.process.pid}")
    await asyncio.sleep(20)
    note(f"reply streams (gateway id: TTL s) 20 s after the kill: {cluster.reply_ttls()}")
    await at(0.85)
    cluster.redis.stop()
    note("Redis stopped")
    await asyncio.sleep(5)
    await asyncio.to_thread(cluster.redis.start)
    note("Redis started again (empty: no persistence)")


TRANSIENT = {"image", "cancelled", "quota"}
"""Key kinds that a request leaves with a TTL; idle means none of them is left."""


async def settle(cluster: Cluster, limit_s: float) -> tuple[int, collections.Counter[str], float]:
    """Wait (at most ``limit_s``) until no transient key is left; the key count then, and how long it took."""
    started = time.monotonic()
    count, kinds = cluster.redis_keys()
    while set(kinds) & TRANSIENT and time.monotonic() < started + limit_s:
        await asyncio.sleep(2)  # noqa: ASYNC110 (polling another process's Redis)
        count, kinds = cluster.redis_keys()
    return count, kinds, time.monotonic() - started


async def client_loop(url: str, tally: Tally, stop_at: float, deadline_ms: int, rng: random.Random) -> None:
    async with httpx.AsyncClient(timeout=deadline_ms / 1000 + 30) as client:
        while time.monotonic() < stop_at:
            spec = dict(rng.choice(INVALID) if rng.random() < 0.05 else rng.choice(REQUESTS))
            body = {"question": QUESTION, "seed": rng.randrange(10_000), "deadline_ms": deadline_ms, **spec}
            files = {"image": ("figure.png", FIGURE, "image/png")} if rng.random() < 0.7 else None
            data = {k: str(v) for k, v in body.items()}
            started = time.monotonic()
            try:
                response = await client.post(
                    f"{url}/solve", data=data, files=files, headers={"authorization": f"Bearer {KEY}"}
                )
            except httpx.HTTPError as exc:
                tally.lost.append(f"{spec.get('mode')}: {type(exc).__name__}")
                continue
            tally.latencies.append(time.monotonic() - started)
            record(tally, response, spec)
            if response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


def _typed_error(payload: Any) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str) and set(error) == {"code", "message", "field"}


async def faults(cluster: Cluster, duration_s: float, started: float, log: list[str]) -> None:
    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + fraction * duration_s - time.monotonic()))

    for fraction, index in ((0.2, 0), (0.7, 1)):
        await at(fraction)
        victim = cluster.policy[index]
        victim.kill()
        next(t for t in cluster.tracks if t.pid == victim.process.pid).killed = True
        log.append(f"{time.monotonic() - started:6.0f} s  SIGKILL policy worker pid {victim.process.pid}")
        await asyncio.sleep(10)
        cluster.policy[index] = cluster.worker("policy")
        log.append(f"{time.monotonic() - started:6.0f} s  restarted it as pid {cluster.policy[index].process.pid}")
        if fraction == 0.2:
            await at(0.45)
            cluster.redis.stop()
            log.append(f"{time.monotonic() - started:6.0f} s  Redis stopped")
            await asyncio.sleep(5)
            await asyncio.to_thread(cluster.redis.start)
            log.append(f"{time.monotonic() - started:6.0f} s  Redis started again (empty: no persistence)")


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="atomthink-soak-"))
    env = {
        "ATOMTHINK_QUEUE": "redis",
        "ATOMTHINK_KEY_PREFIX": "soak",
        "ATOMTHINK_TORCH_THREADS": "1",
        "ATOMTHINK_API_KEYS": json.dumps({"soak": KEY}),
        "ATOMTHINK_QUOTA_MAX_CONCURRENT": str(args.concurrency * 2),
        "ATOMTHINK_QUOTA_CANDIDATES_PER_MINUTE": "100000",
        "ATOMTHINK_VISIBILITY_TIMEOUT_S": "5",
        "ATOMTHINK_HEARTBEAT_TTL_S": "5",
        "ATOMTHINK_JOB_TIMEOUT_S": "60",
        "ATOMTHINK_IMAGE_TTL_S": str(args.image_ttl_s),
        "ATOMTHINK_CANCEL_TTL_S": str(args.cancel_ttl_s),
        "ATOMTHINK_MAX_STEP_TOKENS": "48",
        "ATOMTHINK_MAX_ANSWER_TOKENS": "256",
    }
    vllm = args.deployment == "vllm"
    if vllm:
        env |= {"ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
                "ATOMTHINK_PRM_BACKEND": "openai-completions", "ATOMTHINK_REMOTE_RETRY_S": "45",
                "ATOMTHINK_ENGINE_HEALTH_INTERVAL_S": "2", "ATOMTHINK_ENGINE_PROBE_TIMEOUT_S": "10",
                "ATOMTHINK_DRAIN_GRACE_S": "10", "ATOMTHINK_HEARTBEAT_TTL_S": "10",
                "ATOMTHINK_VISIBILITY_TIMEOUT_S": "30"}  # fmt: skip
    print(f"logs: {workdir}")
    cluster = VllmCluster(workdir, env) if vllm else Cluster(workdir, env)
    cluster.start()
    assert cluster.gateway is not None
    rerouted = [0]
    try:
        # idle: the cluster after one served request (the gateway's reply stream exists from then on), its TTLs run
        async with httpx.AsyncClient(timeout=120) as client:
            for url in [g.url for g in cluster.gateways] if isinstance(cluster, VllmCluster) else [cluster.gateway.url]:
                warm = await client.post(f"{url}/solve", data={"question": QUESTION, "mode": "quick"},
                                         files=None if vllm else {"image": ("figure.png", FIGURE, "image/png")},
                                         headers={"authorization": f"Bearer {KEY}"})  # fmt: skip
                warm.raise_for_status()
        idle_keys, idle_kinds, _ = await settle(cluster, args.drain_s)
        duration_s = args.minutes * 60
        started = time.monotonic()
        tally, fault_log = Tally(), []
        rng = random.Random(args.seed)
        stop_at = started + duration_s
        if isinstance(cluster, VllmCluster):
            clients = [lb_client_loop(cluster, tally, stop_at, args.deadline_ms, random.Random(rng.random()), rerouted)
                       for _ in range(args.concurrency)]  # fmt: skip
            clients.append(vllm_faults(cluster, duration_s, started, fault_log, stop_s=args.engine_stop_s))
            clients.append(supervise(cluster, stop_at + 5, started, fault_log))
        else:
            clients = [client_loop(cluster.gateway.url, tally, stop_at, args.deadline_ms, random.Random(rng.random()))
                       for _ in range(args.concurrency)]  # fmt: skip
            clients.append(faults(cluster, duration_s, started, fault_log))

        async def sampler() -> None:
            while time.monotonic() < started + duration_s:
                cluster.sample_memory(args.warmup_s)
                await asyncio.sleep(5)

        await asyncio.gather(*clients, sampler())
        cluster.sample_memory(args.warmup_s)
        load_keys, load_kinds = cluster.redis_keys()
        pending_load = cluster.pending() if isinstance(cluster, VllmCluster) else None
        after_keys, after_kinds, drained_s = await settle(cluster, args.drain_s)
        pending_after = cluster.pending() if isinstance(cluster, VllmCluster) else None
        leftovers = cluster.keys_of(set(after_kinds) & TRANSIENT)
    finally:
        cluster.stop()

    total = tally.answered + sum(tally.refused.values()) + len(tally.lost)
    latencies = sorted(tally.latencies) or [0.0]
    print("\n".join(fault_log))
    print(f"\n{total} requests in {args.minutes:g} min, {args.concurrency} clients, deadline {args.deadline_ms} ms")
    print(f"answered:  {tally.answered} ({tally.truncated} truncated at their deadline)")
    print(f"refused with a typed error: {sum(tally.refused.values())}  {dict(tally.refused)}")
    print(f"lost:      {len(tally.lost)}  {collections.Counter(tally.lost).most_common(5)}")
    if isinstance(cluster, VllmCluster):
        print(f"rerouted to the other gateway: {rerouted[0]}; restarts {dict(cluster.restarts)}; exits "
              f"{dict(collections.Counter(cluster.exits))}")  # fmt: skip
    print(f"latency p50 {latencies[len(latencies) // 2]:.1f} s, p99 {latencies[int(len(latencies) * 0.99)]:.1f} s, "
          f"max {latencies[-1]:.1f} s")  # fmt: skip
    print("\nresident memory (MiB): after warm-up -> at end (or at its kill)")
    growth = []
    for track in cluster.tracks:
        if track.warm is None or track.last is None:
            print(f"  {track.name:<16} pid {track.pid:<8} (ran under the warm-up time)")
            continue
        change = (track.last - track.warm) / track.warm * 100
        if not track.killed:
            growth.append(change)
        print(f"  {track.name:<16} pid {track.pid:<8} {track.warm / 1024:7.1f} -> {track.last / 1024:7.1f}  "
              f"({change:+.1f}%){'  ended before the end' if track.killed else ''}")  # fmt: skip
    print(f"  largest change of a process alive at the end: {max(growth, default=0.0):+.1f}%")
    print(f"\nRedis keys: idle {idle_keys} {dict(idle_kinds)}")
    print(f"  when the load stopped {load_keys} {dict(load_kinds)}")
    print(f"  after the load {after_keys} {dict(after_kinds)} ({drained_s:.0f} s later)")
    for key in leftovers:
        print(f"  left: {key}")
    if pending_load is not None:
        print(f"consumer group (stream: pending entries, oldest idle ms): when the load stopped {pending_load}, "
              f"after {pending_after}")  # fmt: skip
    return 1 if tally.lost or after_keys != idle_keys else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--deadline-ms", type=int, default=20_000, help="each request's deadline_ms")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="RSS is taken this long after a process starts")
    parser.add_argument("--image-ttl-s", type=int, default=30, help="image TTL in Redis (default 30 s for the soak)")
    parser.add_argument("--cancel-ttl-s", type=int, default=90, help="cancel-marker TTL (default 90 s for the soak)")
    parser.add_argument("--drain-s", type=float, default=150.0, help="most time to wait for keys to expire")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deployment", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--engine-stop-s", type=float, default=70.0, help="vllm: how long the engine stays stopped")
    sys.exit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
