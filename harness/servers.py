"""Real servers for tests: start a process on a free port, wait until it is ready, stop its whole tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``with ServerProcess(["serve"], env) as server: httpx.get(server.url + "/healthz")``."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        ready_path: str = "/readyz",
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
        program: Sequence[str] | None = None,
    ) -> None:
        """``program``: what runs ``args`` (default ``atomthink_serve.cli`` under this interpreter; the vLLM tests pass
        the vLLM venv's API server)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            *(program or (sys.executable, "-m", "atomthink_serve.cli")),
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:  # not ready in time, or the test stopped (a timeout, ^C): leave no server behind
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log: {self.log_path}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready within {self.startup_timeout_s} s; log: {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A private ``redis-server`` on a free port that a test may stop and start again (same port).

    With ``password`` it requires AUTH; with ``tls`` (a directory holding ``ca.pem``, ``server.pem`` and
    ``server.key``) it speaks TLS only, and ``url`` is the ``rediss://`` URL that trusts that CA.
    """

    def __init__(self, workdir: Path, *, password: str | None = None, tls: Path | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.tls = tls
        auth = f":{password}@" if password else ""
        if tls is None:
            self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        else:
            self.url = f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={tls / 'ca.pem'}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                     "--tls-cert-file", str(self.tls / "server.pem"), "--tls-key-file", str(self.tls / "server.key"),
                     "--tls-ca-cert-file", str(self.tls / "ca.pem")]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
            finally:
                client.close()
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerProcess:
    """``atomthink worker ROLE`` as its own process group, with a Prometheus port."""

    def __init__(
        self, role: str, env: Mapping[str, str], log_path: Path | None = None, python: str | Path | None = None
    ) -> None:
        """``python``: the interpreter (default this one; the vLLM tests pass the vLLM venv's)."""
        self.role = role
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        args = [
            str(python or sys.executable),
            "-m",
            "atomthink_serve.cli",
            "worker",
            role,
            "--metrics-port",
            str(self.metrics_port),
        ]
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            args, env={**os.environ, **env}, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-job without acknowledging anything."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM: the worker drains its batch in flight, then exits."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=30)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on this worker's endpoint."""
        text = httpx.get(self.metrics_url, timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
"""The vLLM CPU engine's interpreter (``scripts/install-vllm.sh``); vLLM is never installed into ``.venv``."""

VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
"""A 1 GiB KV cache (the tiny models need far less; the default takes a share of the machine's memory)."""


class VllmServer(ServerProcess):
    """A real vLLM OpenAI-compatible server (``vllm serve``, from the vLLM venv) over a local checkpoint.

    The ``vllm`` console script of ``vllm-cpu`` looks for the distribution ``vllm`` and fails, so the API server
    module is run directly (the same server ``vllm serve`` starts). Chunked prefill is off: on vllm-cpu 0.32 a seeded
    request whose prefill is split kills the engine ("CPU Generator does not use offset").
    """

    def __init__(
        self, model: str | Path, served_name: str, *extra: str, log_path: Path | None = None, api_key: str = ""
    ) -> None:
        args = ["--model", str(model), "--served-model-name", served_name, "--dtype", "float32", "--enforce-eager",
                "--max-model-len", "1024", "--no-enable-chunked-prefill",
                *(["--api-key", api_key] if api_key else []), *extra]  # fmt: skip
        super().__init__(
            args,
            VLLM_CPU_ENV,
            ready_path="/health",
            startup_timeout_s=600,
            log_path=log_path,
            program=(str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server"),
        )
