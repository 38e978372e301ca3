"""Does a large upload stall the gateway's event loop? ``/healthz`` latency while ~40-megapixel images are uploaded.

A real ``atomthink gateway`` on the Redis queue (no workers: the solve fails after the image was checked, with a
short job timeout) answers ``/healthz`` polls every ``--poll-ms`` while ``--uploads`` images go to ``/solve``
(multipart) or ``/v1/chat/completions`` (a data URL), one after another. It prints the latency of the polls that ran
during the uploads (p50, p99, max) next to those of an idle gateway. When the gateway decodes the image on its event
loop, every poll that arrives meanwhile waits for the decode (hundreds of milliseconds at 40 MP).

    python benchmarks/blocking.py                       # this checkout
    python benchmarks/blocking.py --code /tmp/old-tree  # the gateway of another tree (e.g. `git archive` of a commit)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx
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


async def poll(client: httpx.AsyncClient, url: str, every_s: float, stop: asyncio.Event) -> list[float]:
    latencies: list[float] = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get(url + "/healthz")
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(every_s)
    return latencies


async def upload(client: httpx.AsyncClient, url: str, image: bytes, route: str) -> tuple[int, float]:
    started = time.perf_counter()
    if route == "solve":
        response = await client.post(
            url + "/solve", data={"question": "What is shown?", "mode": "direct"}, files={"image": ("x.png", image)}
        )
    else:
        data_url = "data:image/png;base64," + base64.b64encode(image).decode()
        content = [{"type": "text", "text": "What is shown?"}, {"type": "image_url", "image_url": {"url": data_url}}]
        body = {"model": "atomthink", "messages": [{"role": "user", "content": content}], "reasoning_effort": "none"}
        response = await client.post(url + "/v1/chat/completions", json=body)
    return response.status_code, time.perf_counter() - started


async def measure(url: str, image: bytes, args: argparse.Namespace) -> None:
    every_s = args.poll_ms / 1000
    async with httpx.AsyncClient(timeout=120) as poller, httpx.AsyncClient(timeout=120) as uploader:
        stop = asyncio.Event()
        idle_task = asyncio.create_task(poll(poller, url, every_s, stop))
        await asyncio.sleep(args.idle_s)
        stop.set()
        idle = await idle_task
        for route in args.routes:
            stop = asyncio.Event()
            busy_task = asyncio.create_task(poll(poller, url, every_s, stop))
            statuses, durations = [], []
            for _ in range(args.uploads):
                status, seconds = await upload(uploader, url, image, route)
                statuses.append(status)
                durations.append(seconds)
            stop.set()
            busy = await busy_task
            uploads = (
                f"{args.uploads} uploads (HTTP {sorted(set(statuses))}, {statistics.median(durations):.2f} s each)"
            )
            print(f"{route:>6}: {uploads}, {summary(busy)}")
        print(f"  idle: {summary(idle)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=REPO, help="tree whose gateway runs (default: this checkout)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--size", type=int, nargs=2, default=(6320, 6320), metavar=("W", "H"))
    parser.add_argument("--uploads", type=int, default=5)
    parser.add_argument("--poll-ms", type=float, default=5.0, help="pause between /healthz polls")
    parser.add_argument("--idle-s", type=float, default=3.0, help="polling of the idle gateway first")
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
    with gateway:
        asyncio.run(measure(gateway.url, image, args))


if __name__ == "__main__":
    main()
