"""A worker process's HTTP endpoint: Prometheus metrics on every path, plus its liveness and readiness.

- ``/healthz`` (liveness): 200 while the process can do its job (loading, serving, draining); 503 once its engine died
  or hung. The worker exits non-zero right after, so a supervisor without probes restarts it too.
- ``/readyz`` (readiness): 200 only while it takes jobs (model loaded, engine healthy, not stopping).
Both answer ``{"role", "state", "worker_id", "reason"}``. The k8s manifests probe them on the metrics port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

State = Literal["loading", "ready", "stopping", "unhealthy"]
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


class WorkerHealth:
    """What the endpoint reports; written by the worker's loop, read by the server's threads."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.state: State = "loading"
        self.reason: str | None = None
        self.worker_id: str | None = None

    def ready(self, worker_id: str) -> None:
        self.worker_id, self.state = worker_id, "ready"

    def stopping(self) -> None:
        if self.state != "unhealthy":
            self.state = "stopping"

    def unhealthy(self, reason: str) -> None:
        self.state, self.reason = "unhealthy", reason

    def body(self) -> dict[str, Any]:
        return {"role": self.role, "state": self.state, "worker_id": self.worker_id, "reason": self.reason}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Probes every few seconds would flood the log."""


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(health: WorkerHealth) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in (LIVENESS_PATH, READINESS_PATH):
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        ok = health.state != "unhealthy" if path == LIVENESS_PATH else health.state == "ready"
        payload = json.dumps(health.body()).encode()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [payload]

    return app


def start_server(port: int, health: WorkerHealth) -> WSGIServer:
    """Serve metrics and probes on ``port`` (all interfaces) from a daemon thread; ``OSError`` when it is taken."""
    server = make_server("0.0.0.0", port, make_app(health), _Server, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
