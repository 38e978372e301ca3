"""The official presets through a real server: the official SlowThink shape, a plain vote without PRM calls, and a
worker that refuses jobs searched for another preset."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness.servers import ServerProcess, WorkerProcess
from tests.conftest import model_env, queue_env

pytestmark = pytest.mark.integration


def test_atomthink_v2_beam_searches_as_the_official_slowthink(
    tiny_models: dict[str, Path], sample_png: bytes, tmp_path: Path
) -> None:
    env = model_env(tiny_models, ATOMTHINK_PROMPT_PRESET="atomthink-v2", ATOMTHINK_MAX_STEP_TOKENS="6")
    with ServerProcess(["serve"], env, log_path=tmp_path / "serve.log") as server:
        fields = {"question": "What is B?", "mode": "slow", "strategy": "beam", "candidates": "3",
                  "beam_width": "2", "max_steps": "1", "seed": "3", "return_tree": "true"}  # fmt: skip
        body = httpx.post(f"{server.url}/solve", data=fields, files={"image": ("f.png", sample_png)}, timeout=120)
        assert body.status_code == 200, body.text
        tree, stats = body.json()["tree"], body.json()["stats"]
        # beam_width empty rollouts x candidates at depth 1, one policy call per candidate (v2's temperature ramp)
        assert [node["depth"] for node in tree] == [1] * 6
        assert stats["policy_calls"] == 6 + (0 if body.json()["final"] else 1)  # + the fail_try fallback
        assert stats["prm_calls"] == 1

        vote = {"question": "What is B?", "mode": "slow", "strategy": "majority", "candidates": "3",
                "max_steps": "2", "seed": "3"}  # fmt: skip
        voted = httpx.post(f"{server.url}/solve", data=vote, files={"image": ("f.png", sample_png)}, timeout=120)
        assert voted.status_code == 200, voted.text
        assert voted.json()["stats"]["prm_calls"] == 0


def test_a_worker_refuses_jobs_searched_for_another_preset(
    tiny_models: dict[str, Path], redis_prefix: str, tmp_path: Path
) -> None:
    workers_env = model_env(tiny_models, **queue_env("redis", redis_prefix))  # the tiny checkpoint's own preset
    gateway_env = {**workers_env, "ATOMTHINK_PROMPT_PRESET": "atomthink-v1"}
    with (
        WorkerProcess("policy", workers_env, log_path=tmp_path / "policy.log") as _policy,
        WorkerProcess("prm", workers_env, log_path=tmp_path / "prm.log") as _prm,
        ServerProcess(["gateway"], gateway_env, log_path=tmp_path / "gateway.log") as gateway,
    ):
        response = httpx.post(f"{gateway.url}/solve", json={"question": "What is B?", "max_steps": 2}, timeout=120)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "job_failed"
    assert "preset_mismatch" in error["message"] and "atomthink-v1" in error["message"]
