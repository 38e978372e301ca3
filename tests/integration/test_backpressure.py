"""Limits and cancellation through a real gateway: 429 with Retry-After, and client disconnects cancel the search."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from harness.servers import ServerProcess
from tests.conftest import model_env

pytestmark = pytest.mark.integration

LONG = {"question": "Perimeter?", "mode": "slow", "strategy": "best_of_n", "candidates": "8", "max_steps": "50",
        "seed": "1"}  # fmt: skip


def _metric(url: str, line_prefix: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix))


def test_in_flight_limit_answers_429_and_disconnects_cancel(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    env = model_env(tiny_models, ATOMTHINK_MAX_IN_FLIGHT="1", ATOMTHINK_MAX_STEP_TOKENS="24")
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as server:
        first: dict[str, httpx.Response] = {}
        worker = threading.Thread(
            target=lambda: first.update(
                r=httpx.post(f"{server.url}/solve", data={**LONG, "deadline_ms": "4000"}, timeout=60)
            ),  # fmt: skip
        )
        worker.start()
        deadline = time.monotonic() + 10
        while _metric(server.url, "atomthink_in_flight_requests") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = httpx.post(f"{server.url}/solve", data={"question": "1+1?", "mode": "direct"}, timeout=30)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["code"] == "overloaded"
        worker.join()
        assert first["r"].status_code == 200 and first["r"].json()["truncated"] is True

        # a client that gives up: its search is cancelled (and its queued jobs dropped), the slot is freed
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/solve", data={**LONG, "seed": "2"}, timeout=1.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _metric(server.url, 'atomthink_solve_requests_total{mode="slow",status="cancelled"') >= 1:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the disconnected request was never cancelled")
        assert _metric(server.url, "atomthink_in_flight_requests") == 0
        after = httpx.post(f"{server.url}/solve", data={"question": "1+1?", "mode": "direct"}, timeout=30)
        assert after.status_code == 200
