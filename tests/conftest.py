"""Fixtures shared by unit and integration tests: tiny standard checkpoints and a real gateway process."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.servers import ServerProcess

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Randomly initialised tiny LLaVA policy and Llama PRM, saved and reloaded through ``from_pretrained``."""
    from atomthink.modeling.tiny import build_tiny_policy, build_tiny_prm

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


@pytest.fixture(scope="session")
def gateway(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``atomthink serve`` (embedded workers, in-memory queue) on a free port."""
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    with ServerProcess(["serve"], model_env(tiny_models), log_path=log) as server:
        yield server


def png_bytes(width: int = 64, height: int = 64, text: str = "7") -> bytes:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((width // 3, height // 3), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sample_png() -> bytes:
    return png_bytes()
