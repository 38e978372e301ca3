"""The remote backends' HTTP client against a real (scripted) HTTP server: a server that is down or answers 503 is
retried with back-off within the budget, a 4xx fails at once, a budget spent fails with a typed, recoverable error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import BaseModel

from atomthink.settings import Settings
from harness.servers import free_port
from workers.backends.remote import RemoteClient, RemoteRejected, RemoteUnavailable


class Ping(BaseModel):
    x: int


class Pong(BaseModel):
    y: int


class ScriptedServer:
    """Answers each POST with the next status of ``script`` (then 200 with ``{"y": x + 1}``)."""

    def __init__(self, port: int, script: list[int]) -> None:
        self.script = list(script)
        self.posts = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the base class's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.posts += 1
                status = owner.script.pop(0) if owner.script else 200
                payload = json.dumps({"y": body["x"] + 1} if status == 200 else {"error": "scripted"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def client_factory() -> Iterator[list[RemoteClient]]:
    clients: list[RemoteClient] = []
    yield clients
    for client in clients:
        client.close()


def make_client(clients: list[RemoteClient], port: int, retry_s: float) -> RemoteClient:
    client = RemoteClient(f"http://127.0.0.1:{port}", api_key=None, timeout_s=5, max_concurrency=4, name="t",
                          retry_s=retry_s)  # fmt: skip
    clients.append(client)
    return client


def call(client: RemoteClient) -> Pong:
    return client.run(client.post(client.base_url + "/x", Ping(x=1), Pong))


def test_a_server_that_comes_back_within_the_budget_answers_the_call(
    port: int, client_factory: list[RemoteClient]
) -> None:
    client = make_client(client_factory, port, retry_s=20)
    server: list[ScriptedServer] = []
    threading.Timer(1.0, lambda: server.append(ScriptedServer(port, [503, 502]))).start()  # down 1 s, then 2 busy
    started = time.monotonic()
    try:
        assert call(client) == Pong(y=2)
    finally:
        for s in server:
            s.close()
    assert time.monotonic() - started >= 1.0 and client.retries >= 3, "refused, then 503 and 502, then served"
    assert server[0].posts == 3


def test_a_server_down_past_the_budget_fails_typed_and_recoverable(
    port: int, client_factory: list[RemoteClient]
) -> None:
    client = make_client(client_factory, port, retry_s=1.0)
    started = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="ConnectError") as failure:
        call(client)
    assert 0.3 < time.monotonic() - started < 3.0, "retried for about the budget, no longer"
    assert failure.value.code == "model_server_unavailable" and failure.value.recoverable


def test_a_bad_request_is_not_retried(port: int, client_factory: list[RemoteClient]) -> None:
    server = ScriptedServer(port, [400])
    try:
        client = make_client(client_factory, port, retry_s=20)
        with pytest.raises(RemoteRejected, match="400") as failure:
            call(client)
        assert server.posts == 1 and client.retries == 0
        assert failure.value.code == "model_server_rejected" and not failure.value.recoverable
    finally:
        server.close()


def test_the_retry_budget_stays_inside_the_job_timeout() -> None:
    assert Settings(remote_retry_s=60, job_timeout_s=120).remote_retry_budget_s == 60
    assert Settings(remote_retry_s=60, job_timeout_s=20).remote_retry_budget_s == 15
