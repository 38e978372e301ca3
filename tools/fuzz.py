"""Property-based fuzzing of the gateway's OpenAPI schema (schemathesis): every route, JSON and multipart bodies.

Generates valid and invalid requests for every operation in ``/openapi.json``, sends them concurrently and prints,
per route and status, what came back. A failure is a 5xx, or a 4xx whose body is not ``{"error": {"code",
"message", "field"}}``. Exit status 1 when there is one.

    python tools/fuzz.py --requests 2000                 # starts its own gateway (shipped models, 2 s per solve)
    python tools/fuzz.py --requests 500 --url http://127.0.0.1:8000 --api-key KEY
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

FUZZ_KEY = "fuzz-key-0123456789"


@dataclass
class Report:
    sent: int = 0
    by_route: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    by_body: collections.Counter[str] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    bad_shapes: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.server_errors or self.bad_shapes or self.transport_errors)

    def lines(self) -> list[str]:
        bodies = ", ".join(f"{kind} {count}" for kind, count in sorted(self.by_body.items()))
        out = [f"{self.sent} requests in {self.seconds:.0f} s ({bodies})"]
        for (route, status), count in sorted(self.by_route.items()):
            out.append(f"  {route:<16} {status}  {count}")
        four = sum(c for (_, s), c in self.by_route.items() if 400 <= s < 500)
        five = sum(c for (_, s), c in self.by_route.items() if s >= 500)
        out.append(f"5xx: {five}   4xx: {four} ({len(self.bad_shapes)} not in the error shape)   "
                   f"transport errors: {len(self.transport_errors)}")  # fmt: skip
        for title, items in (("5xx", self.server_errors), ("bad shape", self.bad_shapes),
                             ("transport", self.transport_errors)):  # fmt: skip
            for item in items[:5]:
                out.append(f"  {title}: {item}")
        return out


ERROR_KEYS = {"code", "message", "field"}
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}
"""The OpenAI-compatible routes (``/v1/...``) answer errors in OpenAI's shape, as their clients expect."""


def error_shape_problem(response: Any, path: str = "/solve") -> str | None:
    """Why a 4xx body is not its route's error shape, or None: ``{"error": {"code", "message", "field"}}``, or
    ``{"error": {"message", "type", "param", "code"}}`` on ``/v1/...``."""
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"top level {sorted(body) if isinstance(body, dict) else type(body).__name__}"
    error = body["error"]
    expected = OPENAI_ERROR_KEYS if path.startswith("/v1/") else ERROR_KEYS
    if set(error) != expected:
        return f"error keys {sorted(error)}"
    if not isinstance(error["code"], str) or not isinstance(error["message"], str):
        return "code or message not a string"
    optional = error.get("param") if path.startswith("/v1/") else error["field"]
    if optional is not None and not isinstance(optional, str):
        return "field or param neither a string nor null"
    return None


def generate_cases(url: str, total: int, seed: int) -> list[Any]:
    """At least ``total`` schemathesis cases over every operation, valid and invalid (``/solve`` takes the rest)."""
    import schemathesis
    from hypothesis import strategies as st
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    cases: list[Any] = []
    solve_strategy = None
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )
        if operation.path == "/solve":
            solve_strategy = strategy
            continue
        has_input = any(True for _ in operation.iter_parameters()) or operation.get_request_payload_content_types()
        cases += _draw(strategy, max(1, total // len(operations)) if has_input else 2, seed)
    assert solve_strategy is not None, "the schema has no POST /solve"
    round_ = 0
    while len(cases) < total:  # /solve takes the rest (a draw may come back short of what it was asked)
        cases += _draw(solve_strategy, total - len(cases), seed + round_)
        round_ += 1
    return cases


def _draw(strategy: Any, count: int, seed: int) -> list[Any]:
    import hypothesis

    drawn: list[Any] = []

    @hypothesis.settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.seed(seed)
    @hypothesis.given(strategy)
    def collect(case: Any) -> None:
        drawn.append(case)

    collect()
    return drawn


def send(url: str, cases: list[Any], api_key: str | None, concurrency: int, timeout_s: float) -> Report:
    report = Report()
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.monotonic()

    def one(case: Any) -> None:
        route = f"{case.operation.method.upper()} {case.operation.path}"
        try:
            response = case.call(base_url=url, headers=headers, timeout=timeout_s)
        except requests.RequestException as exc:
            report.transport_errors.append(f"{route}: {type(exc).__name__}: {exc}")
            return
        report.sent += 1
        report.by_body[case.media_type or "no body"] += 1
        report.by_route[(route, response.status_code)] += 1
        if response.status_code >= 500:
            report.server_errors.append(f"{route} {response.status_code}: {response.text[:200]}")
        elif response.status_code >= 400:
            problem = error_shape_problem(response, case.operation.path)
            if problem:
                report.bad_shapes.append(f"{route} {response.status_code}: {problem}: {response.text[:200]}")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, cases))
    report.seconds = time.monotonic() - started
    return report


def fuzz(url: str, total: int, *, api_key: str | None = None, seed: int = 0, concurrency: int = 4) -> Report:
    cases = generate_cases(url, total, seed)
    return send(url, cases, api_key, concurrency, timeout_s=120)


@contextmanager
def own_gateway(solve_timeout_s: float) -> Iterator[str]:
    """``atomthink serve`` (shipped models, memory queue) on a free port, keys on, each solve cut at the timeout."""
    from harness.servers import ServerProcess

    env = {
        "ATOMTHINK_REQUEST_TIMEOUT_S": str(solve_timeout_s),
        "ATOMTHINK_API_KEYS": json.dumps({"fuzz": FUZZ_KEY}),
        "ATOMTHINK_TORCH_THREADS": "1",
        "ATOMTHINK_MAX_IN_FLIGHT": "256",
    }
    log = Path(tempfile.mkdtemp(prefix="atomthink-fuzz-")) / "gateway.log"
    print(f"gateway log: {log}")
    with ServerProcess(["serve"], env, log_path=log) as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests to generate (default 2000)")
    parser.add_argument("--url", help="a running gateway; default: start one")
    parser.add_argument("--api-key", help="bearer key for a gateway with keys on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--solve-timeout-s", type=float, default=2.0, help="own gateway: ceiling on one solve")
    args = parser.parse_args()
    if args.url:
        report = fuzz(args.url, args.requests, api_key=args.api_key, seed=args.seed, concurrency=args.concurrency)
    else:
        with own_gateway(args.solve_timeout_s) as url:
            report = fuzz(url, args.requests, api_key=FUZZ_KEY, seed=args.seed, concurrency=args.concurrency)
    print("\n".join(report.lines()))
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
