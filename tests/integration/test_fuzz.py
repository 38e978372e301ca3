"""A short schemathesis run against a real gateway (``tools/fuzz.py``; the long run is a documented command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.servers import ServerProcess
from tests.conftest import model_env
from tools.fuzz import FUZZ_KEY, fuzz

pytestmark = pytest.mark.integration


def test_fuzzed_requests_get_no_5xx_and_every_4xx_in_the_error_shape(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    env = model_env(
        tiny_models,
        ATOMTHINK_REQUEST_TIMEOUT_S="1",  # a fuzzed slow search with 64 candidates stops at 1 s
        ATOMTHINK_API_KEYS=json.dumps({"fuzz": FUZZ_KEY}),
        ATOMTHINK_MAX_IN_FLIGHT="256",
    )
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as server:
        report = fuzz(server.url, 120, api_key=FUZZ_KEY, seed=0, concurrency=4)
    print("\n".join(report.lines()))
    assert report.sent >= 100
    assert not report.server_errors and not report.bad_shapes and not report.transport_errors, report.lines()
    statuses = {status for (route, status) in report.by_route if route == "POST /solve"}
    assert 200 in statuses and 422 in statuses  # both valid and invalid requests were generated and served
    assert report.by_body["multipart/form-data"] >= 10 and report.by_body["application/json"] >= 10
