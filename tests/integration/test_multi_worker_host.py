"""Several worker processes on one host with their defaults: the README's "Scaling out" commands, as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from harness.servers import REPO_ROOT, ServerProcess, free_port
from tests.conftest import TEST_REDIS_URL, model_env

pytestmark = pytest.mark.integration

README_REDIS_URL = "redis://127.0.0.1:6379/0"  # the Redis of the README's one-host commands


def readme_scaling_commands() -> list[list[str]]:
    """The ``atomthink gateway`` and ``atomthink worker`` lines of the README's "Scaling out" code block."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Scaling out") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    commands = []
    for line in block.strip().splitlines():
        words = shlex.split(line.split("#", 1)[0])
        if words[:2] in (["atomthink", "gateway"], ["atomthink", "worker"]):
            commands.append([TEST_REDIS_URL if w == README_REDIS_URL else w for w in words])
    return commands


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "atomthink_serve.cli", *args[1:]],
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def test_readme_multi_worker_commands_on_one_host(
    tiny_models: dict[str, Path], redis_prefix: str, tmp_path: Path
) -> None:
    commands = readme_scaling_commands()
    gateway = next(c for c in commands if c[1] == "gateway")
    policy = next(c for c in commands if c[1:3] == ["worker", "policy"])
    prm = next(c for c in commands if c[1:3] == ["worker", "prm"])
    # changes to the README's commands: its Redis URL is the test Redis, with a key prefix of this test's own
    env = model_env(tiny_models, ATOMTHINK_KEY_PREFIX=redis_prefix)
    gateway_args = [w for w in gateway[1:] if w not in ("--port", "8000")]  # ServerProcess picks a free port
    logs = [tmp_path / f"worker-{i}.log" for i in range(3)]
    with ExitStack() as stack:
        for args, log in zip((policy, policy, prm), logs, strict=True):
            stack.enter_context(_process(args, env, log))
        server = stack.enter_context(ServerProcess(gateway_args, env, log_path=tmp_path / "gateway.log"))
        deadline = time.monotonic() + 120  # ready at one worker of each role; wait for every one
        while (ready := httpx.get(f"{server.url}/readyz", timeout=10).json())["workers"] != {"policy": 2, "prm": 1}:
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        body = {"question": "What is 2+3?", "mode": "slow", "candidates": 2, "max_steps": 2, "seed": 1}
        response = httpx.post(f"{server.url}/solve", json=body, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["stats"]["prm_calls"] >= 1
        ports = []
        for log in logs:
            found = re.search(r"worker metrics on http://0\.0\.0\.0:(\d+)/metrics", log.read_text())
            assert found, log.read_text()
            ports.append(int(found.group(1)))
        assert len(set(ports)) == 3  # each took its own port: the second policy worker moved on from 9400
        for port in ports:
            assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200


def test_worker_whose_metrics_ports_are_all_taken_exits_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as first, socket.socket() as second:
        first.bind(("0.0.0.0", port))
        first.listen()
        second.bind(("0.0.0.0", port + 1))
        second.listen()
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "atomthink_serve.cli",
                "worker",
                "policy",
                "--redis",
                TEST_REDIS_URL,
                "--metrics-port",
                str(port),
            ],  # fmt: skip
            env={**os.environ, "ATOMTHINK_METRICS_PORT_TRIES": "2"},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"atomthink worker: metrics ports {port}-{port + 1} are all taken; pass --metrics-port PORT (0: off)"
    )
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
