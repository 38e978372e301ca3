"""Fixtures shared by unit and integration tests: tiny standard checkpoints and a real gateway process."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image, ImageDraw

from harness.servers import ServerProcess

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised tiny LLaVA policy and Llama PRM, saved and reloaded through ``from_pretrained``."""
    from research.modeling.tiny import build_tiny_policy, build_tiny_prm

    root = tmp_path_factory.mktemp("tiny-models")
    return {"policy": build_tiny_policy(root / "policy", seed=0), "prm": build_tiny_prm(root / "prm", seed=0)}


def model_env(models: dict[str, Path], **extra: str) -> dict[str, str]:
    """Environment for a gateway or worker process that serves the given checkpoints quickly on a CPU."""
    return {
        "ATOMTHINK_POLICY_MODEL": str(models["policy"]),
        "ATOMTHINK_PRM_MODEL": str(models["prm"]),
        "ATOMTHINK_MAX_STEP_TOKENS": "12",
        "ATOMTHINK_MAX_ANSWER_TOKENS": "24",
        "ATOMTHINK_TORCH_THREADS": "1",
        "ATOMTHINK_QUICK_MAX_RETRIES": "2",
        **extra,
    }


TEST_REDIS_URL = os.environ.get("ATOMTHINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def delete_prefix(url: str, prefix: str) -> None:
    """Remove every key a test deployment wrote under ``prefix``."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the test Redis, cleaned up afterwards."""
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    delete_prefix(TEST_REDIS_URL, prefix)


def queue_env(queue: str, prefix: str) -> dict[str, str]:
    if queue == "memory":
        return {"ATOMTHINK_QUEUE": "memory"}
    return {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": prefix}


@pytest.fixture(scope="session", params=["memory", "redis"])
def gateway(
    request: pytest.FixtureRequest, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``atomthink serve`` with in-process workers on a free port, over each queue implementation."""
    queue = request.param
    prefix = f"atomthink-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path_factory.mktemp("logs") / f"gateway-{queue}.log"
    try:
        # image URLs of this host may be fetched by /v1/chat/completions (the gateway's own example image)
        env = model_env(tiny_models, **queue_env(queue, prefix), ATOMTHINK_IMAGE_URL_HOSTS='["127.0.0.1"]')
        with ServerProcess(["serve"], env, log_path=log) as server:
            yield server
    finally:
        if queue == "redis":
            delete_prefix(TEST_REDIS_URL, prefix)


def png_bytes(width: int = 64, height: int = 64, text: str = "7") -> bytes:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((width // 3, height // 3), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sample_png() -> bytes:
    return png_bytes()
