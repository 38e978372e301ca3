"""Requests that cannot fit a context window: a 400 before any model call, or a search stopped with its best path."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from atomthink.context import PolicyWindow
from atomthink.protocol import SamplingParams
from harness.servers import ServerProcess
from tests.conftest import TEST_REDIS_URL, model_env
from workers.backends.base import GenerationRequest

pytestmark = pytest.mark.integration


def _metric(url: str, line_prefix: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix))


def _assert_refused(response: httpx.Response, model: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["field"] == "question"
    assert f"{model}'s context window of 1024 positions" in error["message"]


def test_over_long_question_and_growing_history(
    tiny_models: dict[str, Path], tmp_path: Path, sample_png: bytes
) -> None:
    env = model_env(tiny_models)  # steps of up to 12 tokens
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as server:
        for mode in ("quick", "direct", "slow"):
            started = time.perf_counter()
            response = httpx.post(
                f"{server.url}/solve",
                data={"question": "What is the perimeter? " * 170, "mode": mode},  # 3,910 characters
                files={"image": ("figure.png", sample_png, "image/png")},
                timeout=30,
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
            _assert_refused(response, "policy")
            assert elapsed_ms < 1000, elapsed_ms  # counted, not generated (typically a few ms)
        assert _metric(server.url, "atomthink_worker_jobs_total") == 0  # no job reached a worker, let alone a model

        # a question that leaves room for a few steps only: the history outgrows the window mid-search
        window = PolicyWindow.from_checkpoint(str(tiny_models["policy"]))
        assert window is not None
        overhead = window.prompt_tokens(GenerationRequest("step", "", [], None, SamplingParams()))
        question = "x" * (window.window - overhead - 12 - 40)  # 40 positions of history before the step budget
        body = {"question": question, "mode": "quick", "max_steps": 50, "seed": 3}
        response = httpx.post(f"{server.url}/solve", json=body, timeout=120)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["truncated"] is True and len(result["steps"]) >= 1
        assert result["stats"]["policy_calls"] < 50
        assert _metric(server.url, 'atomthink_worker_context_refusals_total{role="policy"}') >= 1
        assert _metric(server.url, 'atomthink_solve_requests_total{mode="quick",status="truncated"') == 1


def test_gateway_alone_refuses_before_any_job(redis_prefix: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``atomthink gateway`` reads only the tokenizers: the 400 comes without a worker or a model."""
    env = model_env(
        tiny_models, ATOMTHINK_QUEUE="redis", ATOMTHINK_REDIS_URL=TEST_REDIS_URL, ATOMTHINK_KEY_PREFIX=redis_prefix
    )
    with ServerProcess(["gateway"], env, ready_path="/healthz", log_path=tmp_path / "gateway.log") as server:
        response = httpx.post(f"{server.url}/solve", json={"question": "y" * 4000, "mode": "quick"}, timeout=30)
        _assert_refused(response, "policy")
