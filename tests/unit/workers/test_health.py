"""The worker's probe endpoint, served for real on a free port: what liveness and readiness answer in each state."""

from __future__ import annotations

import httpx

from workers import metrics
from workers.health import LIVENESS_PATH, READINESS_PATH, WorkerHealth, start_server


def codes(base: str) -> tuple[int, int]:
    return httpx.get(base + LIVENESS_PATH).status_code, httpx.get(base + READINESS_PATH).status_code


def test_probes_follow_the_worker_through_its_states() -> None:
    health = WorkerHealth("policy")
    server = start_server(0, health)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert codes(base) == (200, 503), "loading: alive, not ready"
        health.ready("policy-abc")
        assert codes(base) == (200, 200)
        health.unhealthy("engine dead: EngineDeadError")
        assert codes(base) == (503, 503)
        body = httpx.get(base + LIVENESS_PATH).json()
        assert body == {"role": "policy", "state": "unhealthy", "worker_id": "policy-abc",
                        "reason": "engine dead: EngineDeadError"}  # fmt: skip
        health.stopping()
        assert body["state"] == "unhealthy" and health.state == "unhealthy", "a dead engine stays dead while stopping"
        metrics.HEALTHY.labels(role="policy").set(0)
        assert 'atomthink_worker_healthy{role="policy"} 0.0' in httpx.get(base + "/metrics").text
    finally:
        server.shutdown()
        server.server_close()


def test_a_draining_worker_is_alive_but_not_ready() -> None:
    health = WorkerHealth("prm")
    server = start_server(0, health)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        health.ready("prm-1")
        health.stopping()
        assert codes(base) == (200, 503)
    finally:
        server.shutdown()
        server.server_close()
