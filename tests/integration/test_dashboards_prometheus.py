"""The Grafana dashboards against a real Prometheus (Debian package ``prometheus``) scraping a real gateway and a
policy and a PRM worker on a private Redis, after a short load in several modes and candidate counts, one 422 and
some 429s: every panel query parses, and every query on the project's metrics returns data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.servers import REPO_ROOT, RedisServer, ServerProcess, WorkerProcess, free_port
from tests.conftest import model_env
from tests.unit.deploy.test_deploy_compose import DASHBOARDS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="the prometheus binary is missing: apt-get install prometheus (scripts/install.sh does it)",
    ),
]

LOAD: list[dict[str, Any]] = [
    {"mode": "direct"},
    {"mode": "cot"},
    {"mode": "quick"},
    {"mode": "slow", "strategy": "greedy", "candidates": 1},
    {"mode": "slow", "strategy": "beam", "candidates": 2, "beam_width": 2},
    {"mode": "slow", "strategy": "best_of_n", "candidates": 4},
    {"mode": "slow", "strategy": "majority", "candidates": 3},
    {"mode": "slow", "strategy": "majority", "candidates": 8, "adaptive": True, "min_candidates": 2},
    {"mode": "slow", "strategy": "beam", "candidates": 2, "beam_width": 2, "seed": 4},
]
# A series is born with its first observation, so Prometheus sees no increase until the second one (the beam
# request above repeats for that): every panel then has at least one finite value.


class Prometheus:
    """``prometheus`` on a free port with a temporary config and data directory."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited; log: {self.workdir / 'prometheus.log'}"
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("prometheus not ready within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, expr: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)

    def vector(self, expr: str) -> list[dict[str, Any]]:
        response = self.query(expr)
        assert response.status_code == 200, f"{expr}: {response.text}"
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.vector(expr):
            assert time.monotonic() < deadline, f"no data for {expr} within {timeout_s} s"
            time.sleep(0.5)


def scrape_config(targets: dict[str, str]) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with each compose host:port swapped for the local process's address
    (``targets``); jobs without a process here (vLLM, Prometheus itself) are dropped."""
    config: dict[str, Any] = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = []
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [targets[t] for t in group["targets"] if t in targets]
        job["static_configs"] = [g for g in job["static_configs"] if g["targets"]]
        if job["static_configs"]:
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


@dataclass
class Stack:
    gateway: ServerProcess
    prometheus: Prometheus


def _solve(url: str, fields: dict[str, Any], image: bytes) -> httpx.Response:
    data = {"question": "What is the value of B?", "max_steps": "2", "seed": "3", **fields}
    files = {"image": ("figure.png", image, "image/png")}
    return httpx.post(f"{url}/solve", data={k: str(v) for k, v in data.items()}, files=files, timeout=120)


def _burst_until_429(url: str, image: bytes) -> int:
    """Four overlapping slow solves against ``max_in_flight=1``: some get 429. Returns how many were served."""
    burst = {"mode": "slow", "strategy": "beam", "candidates": 4, "max_steps": 3}
    served = 0
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: _solve(url, burst, image).status_code, range(4)))
        assert set(codes) <= {200, 429}, codes
        served += codes.count(200)
        if 429 in codes:
            return served
    raise AssertionError("overlapping requests never got a 429")


@pytest.fixture(scope="module")
def stack(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, sample_png: bytes) -> Iterator[Stack]:
    """Redis, two workers and a gateway (``max_in_flight=1``, so overlapping requests get 429), scraped by
    Prometheus every second, after the load."""
    workdir = tmp_path_factory.mktemp("observability")
    with RedisServer(workdir) as redis:
        env = model_env(
            tiny_models,
            ATOMTHINK_QUEUE="redis",
            ATOMTHINK_REDIS_URL=redis.url,
            ATOMTHINK_MAX_STEP_TOKENS="6",
            ATOMTHINK_MAX_ANSWER_TOKENS="12",
            ATOMTHINK_MAX_IN_FLIGHT="1",
        )
        workers = [WorkerProcess(role, env, workdir / f"{role}.log") for role in ("policy", "prm")]
        try:
            with ServerProcess(["gateway"], env, log_path=workdir / "gateway.log") as gateway:
                local = {
                    "gateway:8000": f"127.0.0.1:{gateway.port}",
                    "policy-worker:9400": f"127.0.0.1:{workers[0].metrics_port}",
                    "prm-worker:9400": f"127.0.0.1:{workers[1].metrics_port}",
                }
                with Prometheus(scrape_config(local), workdir) as prometheus:
                    prometheus.wait_for('count(up{job=~"atomthink-.*"} == 1) == 3')
                    for fields in LOAD:
                        response = _solve(gateway.url, fields, sample_png)
                        assert response.status_code == 200, response.text
                    assert _solve(gateway.url, {"mode": "slow", "candidates": 100}, sample_png).status_code == 422
                    solves = len(LOAD) + _burst_until_429(gateway.url, sample_png)
                    # every request's counters scraped, then one more scrape so each series has a later sample
                    prometheus.wait_for(f"sum(atomthink_solve_requests_total) >= {solves}")
                    time.sleep(2)
                    yield Stack(gateway, prometheus)
        finally:
            for worker in workers:
                worker.terminate()


def board_queries(name: str) -> list[tuple[str, str]]:
    board = json.loads((REPO_ROOT / "deploy/grafana/dashboards" / name).read_text())
    return [(title, DASHBOARDS.render(expr, board, rate_interval="2m", time_range="10m"))
            for title, expr in DASHBOARDS.queries(board)]  # fmt: skip


def finite(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(s["value"][1]) for s in result) if math.isfinite(v)]


def test_every_project_panel_query_returns_data(stack: Stack) -> None:
    queries = board_queries("atomthink.json")
    assert len(queries) >= 30
    empty = [f"{title}: {expr}" for title, expr in queries if not finite(stack.prometheus.vector(expr))]
    assert not empty, "panel queries without data (or only NaN):\n" + "\n".join(empty)


def test_vllm_panel_queries_parse(stack: Stack) -> None:
    for title, expr in board_queries("vllm.json"):
        response = stack.prometheus.query(expr)
        assert response.status_code == 200, f"{title}: {expr}: {response.text}"
    assert stack.prometheus.query("histogram_quantile(0.5, sum by (le) (rate(x_bucket[1m]))").status_code == 400


def test_latency_is_shown_per_mode_strategy_and_candidate_count(stack: Stack) -> None:
    [(_, p95)] = [q for q in board_queries("atomthink.json") if q[0] == "Solve latency p95 by candidate count"]
    series = {(s["metric"]["mode"], s["metric"]["strategy"], s["metric"]["candidates"]) for s in
              stack.prometheus.vector(p95)}  # fmt: skip
    assert {("direct", "none", "1"), ("quick", "none", "1"), ("slow", "greedy", "1"), ("slow", "beam", "2"),
            ("slow", "best_of_n", "4"), ("slow", "majority", "4"), ("slow", "beam", "4")} <= series  # fmt: skip
    table = [q for q in board_queries("atomthink.json") if q[0].startswith("Solve latency by candidate count")]
    solves = {
        s["metric"]["candidates"]: float(s["value"][1]) for s in stack.prometheus.vector(table[-1][1])
        if s["metric"]["strategy"] == "beam"
    }  # fmt: skip
    assert solves.keys() == {"2", "4"} and solves["2"] > 0


def test_tokens_per_solve_are_shown_against_candidate_count(stack: Stack) -> None:
    [(_, mean)] = [q for q in board_queries("atomthink.json") if q[0].startswith("Generated tokens per solve by")
                   and q[0].endswith("(mean)")]  # fmt: skip
    tokens = {(s["metric"]["strategy"], s["metric"]["candidates"]): float(s["value"][1])
              for s in stack.prometheus.vector(mean)}  # fmt: skip
    assert tokens[("beam", "2")] > 0 and tokens[("greedy", "1")] > 0
    sampled = stack.prometheus.vector('sum(atomthink_solve_paths_total{strategy="majority"})')
    assert float(sampled[0]["value"][1]) >= 3 + 2  # the fixed vote's 3 paths and the adaptive one's first wave


def test_rejections_and_worker_metrics_carry_the_load(stack: Stack) -> None:
    prometheus = stack.prometheus
    for reason in ("overloaded", "invalid_request"):  # the 429s and the 422 of the load
        [series] = prometheus.vector(f'sum(increase(atomthink_rejected_requests_total{{reason="{reason}"}}[10m]))')
        assert float(series["value"][1]) > 0, reason
    roles = {s["metric"]["role"] for s in prometheus.vector("sum by (role) (atomthink_worker_batch_rows_count) > 0")}
    assert roles == {"policy", "prm"}
    jobs = {s["metric"]["job"] for s in prometheus.vector("atomthink_worker_model_call_seconds_count")}
    assert jobs == {"atomthink-worker"}, "worker metrics come from the workers' own endpoints"
