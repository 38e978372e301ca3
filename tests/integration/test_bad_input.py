"""Every kind of bad input gets a 4xx with ``{"error": {"code", "message", "field"}}``; never a 500."""

from __future__ import annotations

import base64
import io
import os
import zlib
from typing import Any

import httpx
import pytest
from PIL import Image

from atomthink.settings import Settings
from harness.servers import ServerProcess
from tests.conftest import png_bytes

pytestmark = pytest.mark.integration


def _bomb_png(width: int = 8000, height: int = 6000) -> bytes:
    """A valid 48-megapixel PNG of a single colour: tiny encoded, huge decoded."""
    buffer = io.BytesIO()
    Image.new("1", (width, height), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _truncated_png() -> bytes:
    data = png_bytes(256, 256, text="12")
    return data[: len(data) // 2]


VALID = {"question": "What is the value of A?", "mode": "quick", "max_steps": 2}

JSON_CASES: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("missing question", {"mode": "quick"}, 422, "invalid_request", "question"),
    ("empty question", {"question": ""}, 422, "invalid_request", "question"),
    ("oversize question", {"question": "x" * 4001}, 422, "invalid_request", "question"),
    ("unknown mode", {**VALID, "mode": "fast"}, 422, "invalid_request", "mode"),
    ("unknown strategy", {**VALID, "mode": "slow", "strategy": "mcts"}, 422, "invalid_request", "strategy"),
    (
        "unknown aggregation",
        {**VALID, "mode": "slow", "aggregation": "max"},
        422,
        "invalid_request",
        "aggregation",
    ),
    ("candidates zero", {**VALID, "mode": "slow", "candidates": 0}, 422, "invalid_request", "candidates"),
    (
        "candidates too many",
        {**VALID, "mode": "slow", "candidates": 65},
        422,
        "invalid_request",
        "candidates",
    ),
    ("beam too wide", {**VALID, "mode": "slow", "beam_width": 17}, 422, "invalid_request", "beam_width"),
    ("max_steps zero", {**VALID, "max_steps": 0}, 422, "invalid_request", "max_steps"),
    ("adaptive with beam", {**VALID, "mode": "slow", "adaptive": True}, 422, "invalid_request", "adaptive"),
    ("adaptive with quick", {**VALID, "adaptive": True}, 422, "invalid_request", "adaptive"),
    (
        "stop rule without adaptive",
        {**VALID, "mode": "slow", "strategy": "majority", "stop_votes": 3},
        422,
        "invalid_request",
        "stop_votes",
    ),
    (
        "stop share above 1",
        {**VALID, "mode": "slow", "strategy": "majority", "adaptive": True, "stop_share": 1.5},
        422,
        "invalid_request",
        "stop_share",
    ),
    (
        "first wave above the ceiling",
        {**VALID, "mode": "slow", "strategy": "majority", "candidates": 4, "adaptive": True, "min_candidates": 8},
        422,
        "invalid_request",
        "min_candidates",
    ),
    (
        "pruning a vote",
        {**VALID, "mode": "slow", "strategy": "majority", "prune_fraction": 0.5},
        422,
        "invalid_request",
        "prune_fraction",
    ),
    (
        "pruning everything",
        {**VALID, "mode": "slow", "strategy": "best_of_n", "prune_fraction": 1},
        422,
        "invalid_request",
        "prune_fraction",
    ),
    ("thinking budget zero", {**VALID, "max_thinking_tokens": 0}, 422, "invalid_request", "max_thinking_tokens"),
    ("max_steps too many", {**VALID, "max_steps": 51}, 422, "invalid_request", "max_steps"),
    ("temperature negative", {**VALID, "temperature": -1}, 422, "invalid_request", "temperature"),
    ("top_p zero", {**VALID, "top_p": 0}, 422, "invalid_request", "top_p"),
    ("seed not a number", {**VALID, "seed": "abc"}, 422, "invalid_request", "seed"),
    ("strategy with quick", {**VALID, "strategy": "beam"}, 422, "invalid_request", "strategy"),
    (
        "candidates with direct",
        {**VALID, "mode": "direct", "candidates": 4},
        422,
        "invalid_request",
        "candidates",
    ),
    (
        "greedy with width",
        {**VALID, "mode": "slow", "strategy": "greedy", "beam_width": 3},
        422,
        "invalid_request",
        "beam_width",
    ),  # fmt: skip
    (
        "weighted vote with width",
        {**VALID, "mode": "slow", "strategy": "weighted_majority", "beam_width": 2},
        422,
        "invalid_request",
        "beam_width",
    ),  # fmt: skip
    ("unknown field", {**VALID, "answer_hint": "7"}, 422, "invalid_request", "answer_hint"),
    ("invalid base64", {**VALID, "image": "not base64!!"}, 400, "invalid_image", "image"),
    ("image not a string", {**VALID, "image": 5}, 422, "invalid_request", "image"),
    (
        "not an image",
        {**VALID, "image": base64.b64encode(b"hello, I am text").decode()},
        400,
        "invalid_image",
        "image",
    ),  # fmt: skip
    (
        "truncated image",
        {**VALID, "image": base64.b64encode(_truncated_png()).decode()},
        400,
        "invalid_image",
        "image",
    ),  # fmt: skip
    (
        "decompression bomb",
        {**VALID, "image": base64.b64encode(_bomb_png()).decode()},
        413,
        "image_too_large",
        "image",
    ),  # fmt: skip
]


def _assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize(("name", "body", "status", "code", "field"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_bad_json_input(
    gateway: ServerProcess, name: str, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    _assert_error(httpx.post(f"{gateway.url}/solve", json=body, timeout=60), status, code, field)


def test_bad_multipart_fields(gateway: ServerProcess, sample_png: bytes) -> None:
    files = {"image": ("a.png", sample_png, "image/png")}
    _assert_error(httpx.post(f"{gateway.url}/solve", data={"mode": "quick"}, files=files), 422,
                  "invalid_request", "question")  # fmt: skip
    _assert_error(httpx.post(f"{gateway.url}/solve", data={**VALID, "candidates": "many"}, files=files), 422,
                  "invalid_request", "candidates")  # fmt: skip
    not_image = {"image": ("a.png", b"GIF89a but not really", "image/png")}
    _assert_error(httpx.post(f"{gateway.url}/solve", data=VALID, files=not_image), 400, "invalid_image", "image")
    truncated = {"image": ("a.png", _truncated_png(), "image/png")}
    _assert_error(httpx.post(f"{gateway.url}/solve", data=VALID, files=truncated), 400, "invalid_image", "image")
    bomb = {"image": ("bomb.png", _bomb_png(), "image/png")}
    _assert_error(httpx.post(f"{gateway.url}/solve", data=VALID, files=bomb), 413, "image_too_large", "image")
    extra_file = {**files, "other": ("b.png", sample_png, "image/png")}
    response = httpx.post(f"{gateway.url}/solve", data=VALID, files=extra_file)
    assert response.status_code in (400, 422) and response.json()["error"]["code"] == "invalid_request"


def test_image_over_the_encoded_size_limit(gateway: ServerProcess) -> None:
    limit = Settings().max_image_bytes
    payload = os.urandom(limit + 1)
    files = {"image": ("big.png", payload, "image/png")}
    _assert_error(httpx.post(f"{gateway.url}/solve", data=VALID, files=files, timeout=60), 413,
                  "image_too_large", "image")  # fmt: skip
    encoded = base64.b64encode(payload).decode()
    _assert_error(httpx.post(f"{gateway.url}/solve", json={**VALID, "image": encoded}, timeout=60), 413,
                  "image_too_large", "image")  # fmt: skip


def test_malformed_bodies(gateway: ServerProcess) -> None:
    headers = {"content-type": "application/json"}
    _assert_error(httpx.post(f"{gateway.url}/solve", content=b"{not json", headers=headers), 422,
                  "invalid_request", None)  # fmt: skip
    _assert_error(httpx.post(f"{gateway.url}/solve", content=b"[1, 2]", headers=headers), 422,
                  "invalid_request", None)  # fmt: skip
    _assert_error(httpx.post(f"{gateway.url}/solve", content=b"hi", headers={"content-type": "text/plain"}), 415,
                  "unsupported_media_type", None)  # fmt: skip
    gzip_like = zlib.compress(b"x" * 100)
    _assert_error(httpx.post(f"{gateway.url}/solve", content=gzip_like,
                             headers={"content-type": "multipart/form-data; boundary=zz"}), 422,
                  "invalid_request", None)  # fmt: skip


def test_unknown_route_and_method(gateway: ServerProcess) -> None:
    _assert_error(httpx.get(f"{gateway.url}/nope"), 404, "not_found", None)
    _assert_error(httpx.get(f"{gateway.url}/solve"), 405, "method_not_allowed", None)


def test_backend_failure_is_a_503(tiny_models: dict[str, Any], sample_png: bytes, tmp_path: Any) -> None:
    """A worker that cannot answer in time: the request fails with 503 and the error body, not a 500."""
    from tests.conftest import model_env

    env = model_env(tiny_models, ATOMTHINK_JOB_TIMEOUT_S="0.001")
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as server:
        response = httpx.post(f"{server.url}/solve", data=VALID, files={"image": ("a.png", sample_png)}, timeout=60)
        _assert_error(response, 503, "job_timeout", None)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
