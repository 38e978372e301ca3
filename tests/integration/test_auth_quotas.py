"""API keys and per-key quotas through real gateway processes (quotas shared by two gateways on one Redis)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness.servers import ServerProcess
from tests.conftest import TEST_REDIS_URL, model_env
from tools.fuzz import error_shape_problem

pytestmark = pytest.mark.integration

OPEN_PATHS = {"/healthz", "/readyz"}
KEYS = json.dumps({"alice": "alice-key-1", "bob": "bob-key-2"})


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _assert_unauthorized(response: httpx.Response) -> None:
    """401 in the route's error shape (the OpenAI one on ``/v1/...``), code ``unauthorized``."""
    assert response.status_code == 401, response.text
    assert error_shape_problem(response, response.request.url.path) is None, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_keys_guard_every_protected_route(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    env = model_env(tiny_models, ATOMTHINK_API_KEYS=KEYS)
    with ServerProcess(["serve"], env, log_path=log) as server:
        schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        operations = [(path, method) for path, item in schema["paths"].items() for method in item]
        # every route but the probes declares the bearer scheme: a new route without AuthDep fails here
        for path, method in operations:
            secured = bool(schema["paths"][path][method].get("security"))
            assert secured == (path not in OPEN_PATHS), f"{method.upper()} {path}"
        for path, method in operations:
            if path in OPEN_PATHS:
                continue
            _assert_unauthorized(httpx.request(method, server.url + path, json={}, timeout=10))
            _assert_unauthorized(
                httpx.request(method, server.url + path, json={}, headers=_bearer("alice-key-2"), timeout=10)
            )
            _assert_unauthorized(
                httpx.request(method, server.url + path, json={}, headers={"authorization": "alice-key-1"}, timeout=10)
            )
        body = {"question": "What is 2+3?", "mode": "direct", "seed": 1}
        ok = httpx.post(f"{server.url}/solve", json=body, headers=_bearer("alice-key-1"), timeout=60)
        assert ok.status_code == 200, ok.text
        assert httpx.post(f"{server.url}/solve", data=body, headers=_bearer("bob-key-2"), timeout=60).status_code == 200
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text  # open unless metrics_require_key
        assert 'atomthink_key_requests_total{key="alice"} 1.0' in metrics
        assert 'atomthink_key_requests_total{key="bob"} 1.0' in metrics
        assert 'atomthink_rejected_requests_total{reason="unauthorized"}' in metrics
    text = log.read_text()
    assert "alice-key-1" not in text and "bob-key-2" not in text
    assert "API keys on (2 keys: alice, bob)" in text


def _gateway(redis_prefix: str, tmp_path: Path, name: str, **extra: str) -> ServerProcess:
    """A gateway alone on the test Redis: admission happens before any job, so no worker is needed."""
    env = {
        "ATOMTHINK_QUEUE": "redis",
        "ATOMTHINK_REDIS_URL": TEST_REDIS_URL,
        "ATOMTHINK_KEY_PREFIX": redis_prefix,
        "ATOMTHINK_API_KEYS": KEYS,
        **extra,
    }
    return ServerProcess(["gateway"], env, ready_path="/healthz", log_path=tmp_path / f"{name}.log")


def _assert_quota_429(response: httpx.Response, within_s: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert 1 <= int(response.headers["retry-after"]) <= within_s


def test_concurrency_quota_is_shared_by_two_gateways(redis_prefix: str, tmp_path: Path) -> None:
    with (
        _gateway(redis_prefix, tmp_path, "a", ATOMTHINK_QUOTA_MAX_CONCURRENT="1") as a,
        _gateway(redis_prefix, tmp_path, "b", ATOMTHINK_QUOTA_MAX_CONCURRENT="1") as b,
    ):
        held: dict[str, httpx.Response] = {}
        # no worker serves it: the request holds alice's one slot until its deadline, then answers truncated
        body = {"question": "What is 2+3?", "mode": "quick", "deadline_ms": 3000}
        runner = threading.Thread(
            target=lambda: held.update(
                r=httpx.post(f"{a.url}/solve", json=body, headers=_bearer("alice-key-1"), timeout=30)
            )
        )
        runner.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if 'atomthink_key_running_requests{key="alice"} 1.0' in httpx.get(f"{a.url}/metrics", timeout=5).text:
                break
            time.sleep(0.05)
        refused = httpx.post(f"{b.url}/solve", json=body, headers=_bearer("alice-key-1"), timeout=30)
        _assert_quota_429(refused, within_s=1)
        assert "already has 1 requests running" in refused.json()["error"]["message"]
        other = httpx.post(
            f"{b.url}/solve", json={**body, "deadline_ms": 200}, headers=_bearer("bob-key-2"), timeout=30
        )
        assert other.status_code == 200  # bob has his own slot
        runner.join()
        assert held["r"].status_code == 200 and held["r"].json()["truncated"] is True
        again = httpx.post(
            f"{b.url}/solve", json={**body, "deadline_ms": 200}, headers=_bearer("alice-key-1"), timeout=30
        )
        assert again.status_code == 200  # the slot was released when the first request ended
        assert (
            'atomthink_quota_rejections_total{key="alice",quota="concurrency"} 1.0'
            in httpx.get(f"{b.url}/metrics", timeout=5).text
        )


def test_compute_quota_counts_candidates_across_gateways(redis_prefix: str, tmp_path: Path) -> None:
    extra = {"ATOMTHINK_QUOTA_CANDIDATES_PER_MINUTE": "10"}
    with _gateway(redis_prefix, tmp_path, "a", **extra) as a, _gateway(redis_prefix, tmp_path, "b", **extra) as b:
        slow = {"question": "What is 2+3?", "mode": "slow", "strategy": "best_of_n", "deadline_ms": 100}
        first = httpx.post(f"{a.url}/solve", json={**slow, "candidates": 8}, headers=_bearer("alice-key-1"), timeout=30)
        assert first.status_code == 200, first.text
        # 8 + 4 > 10 candidates in the minute, whichever gateway is asked
        over = httpx.post(f"{b.url}/solve", json={**slow, "candidates": 4}, headers=_bearer("alice-key-1"), timeout=30)
        _assert_quota_429(over, within_s=60)
        assert "10 candidates per minute" in over.json()["error"]["message"]
        fits = httpx.post(f"{b.url}/solve", json={**slow, "candidates": 2}, headers=_bearer("alice-key-1"), timeout=30)
        assert fits.status_code == 200  # 8 + 2 = 10 fits
        too_big = httpx.post(
            f"{a.url}/solve", json={**slow, "candidates": 11}, headers=_bearer("bob-key-2"), timeout=30
        )
        _assert_quota_429(too_big, within_s=60)
        assert "over the key's quota" in too_big.json()["error"]["message"]
        # a refused request spends nothing: bob can still ask for his 10
        ok = httpx.post(f"{a.url}/solve", json={**slow, "candidates": 10}, headers=_bearer("bob-key-2"), timeout=30)
        assert ok.status_code == 200


def test_metrics_behind_the_key_when_asked(redis_prefix: str, tmp_path: Path) -> None:
    with _gateway(redis_prefix, tmp_path, "a", ATOMTHINK_METRICS_REQUIRE_KEY="true") as gateway:
        _assert_unauthorized(httpx.get(f"{gateway.url}/metrics", timeout=10))
        allowed = httpx.get(f"{gateway.url}/metrics", headers=_bearer("bob-key-2"), timeout=10)
        assert allowed.status_code == 200 and "atomthink_key_requests_total" in allowed.text
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
