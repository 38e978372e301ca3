"""Does a large upload stall the gateway's event loop? ``/healthz`` latency while ~40-megapixel images are uploaded.

A real ``atomthink gateway`` on the Redis queue (no workers: the solve fails after the image was checked, with a
short job timeout) answers ``/healthz`` polls every ``--poll-ms`` while ``--uploads`` images go to ``/solve``
(multipart) or ``/v1/chat/completions`` (a data URL), one after another. It prints the latency of the polls that ran
during the uploads (p50, p99, max) next to those of an idle gateway. When the gateway decodes the image on its event
loop, every poll that arrives meanwhile waits for the decode (hundreds of milliseconds at 40 MP).

    python benchmarks/blocking.py                       # this checkout
    python benchmarks/blocking.py --code /tmp/old-tree  # the gateway of another tree (e.g. `git archive` of a commit)

Then (this checkout only) it times the gateway's first-prompt context check, which the solver runs on the loop.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.servers import ServerProcess  # noqa: E402


def test_image(width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height`` pixels that compresses under the 10 MB limit but decodes at full cost."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(0, width, 97):
        draw.line([(i, 0), (width - i, height)], fill=(i % 255, 40, 200), width=3)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float]) -> str:
    p50, p99, worst = statistics.median(latencies), percentile(latencies, 0.99), max(latencies)
    return (
        f"{len(latencies)} polls: /healthz p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms, max {1000 * worst:.1f} ms"
    )


class Poller:
    """``GET /healthz`` every ``every_s`` from a thread of its own (its own connection, no share of the uploading
    event loop), recording each answer's latency."""

    def __init__(self, url: str, every_s: float) -> None:
        self.url, self.every_s = url, every_s
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(self.url + "/healthz").raise_for_status()
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(self.every_s)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(client: httpx.Client, url: str, image: bytes, chat_body: bytes, route: str) -> tuple[int, float]:
    started = time.perf_counter()
    if route == "solve":
        response = client.post(
            url + "/solve", data={"question": "What is shown?", "mode": "direct"}, files={"image": ("x.png", image)}
        )
    else:
        headers = {"content-type": "application/json"}
        response = client.post(url + "/v1/chat/completions", content=chat_body, headers=headers)
    return response.status_code, time.perf_counter() - started


def measure(url: str, image: bytes, args: argparse.Namespace) -> None:
    every_s = args.poll_ms / 1000
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    content = [{"type": "text", "text": "What is shown?"}, {"type": "image_url", "image_url": {"url": data_url}}]
    chat = {"model": "atomthink", "messages": [{"role": "user", "content": content}], "reasoning_effort": "none"}
    chat_body = json.dumps(chat).encode()
    with Poller(url, every_s) as idle:
        time.sleep(args.idle_s)
    with httpx.Client(timeout=120) as uploader:
        for route in args.routes:
            statuses, durations = [], []
            with Poller(url, every_s) as busy:
                for _ in range(args.uploads):
                    status, seconds = upload(uploader, url, image, chat_body, route)
                    statuses.append(status)
                    durations.append(seconds)
            uploads = (
                f"{args.uploads} uploads (HTTP {sorted(set(statuses))}, {statistics.median(durations):.2f} s each)"
            )
            print(f"{route:>6}: {uploads}, {summary(busy.latencies)}")
    print(f"  idle: {summary(idle.latencies)}")


def check_cost(runs: int = 50) -> None:
    """The gateway's first-prompt context check (tokenization, run on the event loop by the solver), timed in process
    on the shipped tiny policy and PRM: a short question and one at the 4000-character limit."""
    from atomthink.context import FirstPromptCheck
    from atomthink.errors import ContextTooLong
    from atomthink.protocol import SamplingParams
    from atomthink.settings import Settings

    check = FirstPromptCheck.from_settings(Settings())
    questions = {"short": "What is 2 + 2?", "4000 chars": ("What is the area of the triangle ABC? " * 200)[:4000]}
    for label, question in questions.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            with contextlib.suppress(ContextTooLong):
                check.check("step", question, True, SamplingParams(max_new_tokens=64), scored=True)
            times.append(1000 * (time.perf_counter() - started))
        print(
            f"first-prompt check, {label:>10} question: p50 {statistics.median(times):.2f} ms, max {max(times):.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=REPO, help="tree whose gateway runs (default: this checkout)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--size", type=int, nargs=2, default=(6320, 6320), metavar=("W", "H"))
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--poll-ms", type=float, default=5.0, help="pause between /healthz polls")
    parser.add_argument("--idle-s", type=float, default=3.0, help="polling of the idle gateway first")
    parser.add_argument("--no-check-cost", action="store_true", help="skip timing the first-prompt check")
    parser.add_argument("--routes", nargs="+", default=["solve", "openai"], choices=["solve", "openai"])
    args = parser.parse_args()

    image = test_image(*args.size)
    megapixels = args.size[0] * args.size[1] / 1e6
    print(f"image: {args.size[0]}x{args.size[1]} = {megapixels:.1f} MP, {len(image) / 1e6:.1f} MB PNG")
    code = args.code.resolve()
    env = {
        "PYTHONPATH": str(code) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "ATOMTHINK_KEY_PREFIX": f"bench-blocking-{uuid.uuid4().hex[:8]}",
        "ATOMTHINK_JOB_TIMEOUT_S": "0.5",
        "ATOMTHINK_SERVED_MODEL_NAME": "atomthink",
        "ATOMTHINK_POLICY_MODEL": str(REPO / "models" / "atomthink-tiny-policy"),
        "ATOMTHINK_PRM_MODEL": str(REPO / "models" / "atomthink-tiny-prm"),
    }
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"blocking-gateway-{os.getpid()}.log"
    gateway = ServerProcess(["gateway", "--redis", args.redis], env, ready_path="/healthz", log_path=log_path)
    gateway.args[1:3] = ["-c", f"import sys; sys.path.insert(0, {str(code)!r}); import runpy; "
                         "runpy.run_module('atomthink_serve.cli', run_name='__main__')"]  # fmt: skip
    print(f"gateway code: {code}")
    try:
        with gateway:
            measure(gateway.url, image, args)
    finally:
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=env["ATOMTHINK_KEY_PREFIX"] + ":*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    if not args.no_check_cost and code == REPO:
        check_cost()


if __name__ == "__main__":
    main()
