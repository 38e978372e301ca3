"""Redis as in production: TLS (``rediss://``) with a password, against a private ``redis-server`` started here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from harness.servers import RedisServer, ServerProcess
from tests.conftest import model_env

pytestmark = pytest.mark.integration

PASSWORD = "tls-test-password-7f3a"


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=atomthink-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    return directory


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, password=PASSWORD, tls=make_certificates(tmp_path / "tls")) as server:
        yield server


def test_tls_redis_with_password_serves_requests(
    tls_redis: RedisServer, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    # the server speaks TLS only and wants the password
    plain = redis.Redis(port=tls_redis.port, socket_timeout=1, socket_connect_timeout=1)
    with pytest.raises(redis.RedisError):
        plain.ping()
    plain.close()
    no_password = redis.Redis.from_url(tls_redis.url.replace(f":{PASSWORD}@", ""), socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        no_password.ping()
    no_password.close()

    log = tmp_path / "serve.log"
    env = model_env(
        tiny_models,
        ATOMTHINK_API_KEYS=json.dumps({"alice": "alice-key"}),
        ATOMTHINK_QUOTA_MAX_CONCURRENT="2",  # quotas go through the same TLS connection settings
        ATOMTHINK_QUOTA_CANDIDATES_PER_MINUTE="100",
    )
    with ServerProcess(["serve", "--redis", tls_redis.url], env, log_path=log) as server:
        body = {"question": "What is 2+3?", "mode": "slow", "candidates": 2, "max_steps": 2, "seed": 1}
        response = httpx.post(
            f"{server.url}/solve", json=body, headers={"authorization": "Bearer alice-key"}, timeout=120
        )
        assert response.status_code == 200, response.text
        assert response.json()["stats"]["prm_calls"] >= 1
        ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
        assert ready["queue"] == "redis" and ready["workers"] == {"policy": 1, "prm": 1}
    client = redis.Redis.from_url(tls_redis.url)
    assert client.exists("atomthink:quota:spent:alice") == 1  # the quota lives in the TLS Redis
    client.close()
    assert PASSWORD not in log.read_text()
