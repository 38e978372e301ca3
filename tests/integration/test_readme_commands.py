"""The README runs as written: every ``curl`` line, the OpenAI client example and the annotate command of its code
blocks, against ``atomthink serve`` with its defaults (shipped tiny models, memory queue) on a free port.

Only the address changes (``localhost:8000`` becomes the test server's) and the annotate output folder (a temporary
one). The first lines' install commands run in CI itself (``.ci/run``); the "Scaling out" block has its own test
(``test_multi_worker_host.py``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers import ServerProcess

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text()
ADDRESSES = re.compile(r"(?:http://)?(?:localhost|127\.0\.0\.1):8000")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def commands(prefix: str) -> list[str]:
    """Every command of the README's bash blocks that starts with ``prefix``, continuation lines joined, comments
    dropped."""
    found = []
    for block in blocks("bash"):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#[^'\"]*$", "", line).strip()  # a trailing comment (never inside quotes here)
            if line.startswith(prefix):
                found.append(line)
    return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("readme") / "serve.log"
    with ServerProcess(["serve"], {"ATOMTHINK_TORCH_THREADS": "1"}, log_path=log) as server:
        yield server


def at(command: str, server: ServerProcess) -> str:
    return ADDRESSES.sub(lambda m: server.url if m.group(0).startswith("http") else server.url[7:], command)


def json_bodies(text: str) -> list[dict[str, object]]:
    """The JSON objects printed one after another (curl adds no newline)."""
    decoder, bodies, at_ = json.JSONDecoder(), list[dict[str, object]](), 0
    while text[at_:].strip():
        at_ += len(text[at_:]) - len(text[at_:].lstrip())
        body, at_ = decoder.raw_decode(text, at_)
        bodies.append(body)
    return bodies


def test_every_curl_block_answers(gateway: ServerProcess) -> None:
    curl_blocks = [block for block in blocks("bash") if block.lstrip().startswith("curl ")]
    assert len(curl_blocks) >= 3, curl_blocks
    for block in curl_blocks:
        script = "set -euo pipefail\n" + at(block, gateway)
        done = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=300)
        assert done.returncode == 0, (block, done.stderr)
        out = done.stdout.decode()
        if "stream=true" in block:
            assert "event: expansion" in out and "event: result" in out, out[-500:]
            continue
        bodies = json_bodies(out)
        assert len(bodies) == len(re.findall(r"^curl ", block, flags=re.MULTILINE)), out[:500]
        for body in bodies:
            assert "answer" in body and body["steps"], (block, body)


def test_the_openai_client_example_runs(gateway: ServerProcess) -> None:
    [example] = [block for block in blocks("python") if "openai.OpenAI" in block]
    done = subprocess.run([sys.executable, "-c", at(example, gateway)], cwd=REPO_ROOT, capture_output=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "=>" in done.stdout.decode()


def test_the_annotate_command_runs(gateway: ServerProcess, tmp_path: Path) -> None:
    [command] = commands(".venv/bin/atomthink annotate ")
    out = tmp_path / "annotated"
    command = at(command, gateway).replace("--out annotated", f"--out {out}")
    done = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    [summary] = json_bodies(done.stdout.decode())
    assert summary and (out / "annotations.jsonl").is_file() and (out / "report.md").is_file()
