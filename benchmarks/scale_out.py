"""Benchmark of the Redis scale-out path (issue 4). Prints figures; asserts nothing (machines are noisy).

1. Solves per second in slow mode at concurrency 1, 4 and 16, with cross-request batching on (batch 16, wait 5 ms)
   versus forced batch size 1 (what peers that score candidates one by one do): a gateway, one policy worker and one
   PRM worker as separate processes on a private Redis.
2. Queue overhead per expansion with a worker that answers at once: enqueue to pick-up, and reply delivery (reply
   written to pick-up by the gateway's listener), p50 and p99.

    .venv/bin/python benchmarks/scale_out.py [--policy-model DIR --prm-model DIR] [--requests 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from atomthink.protocol import PolicyJob, PolicyResult, SamplingParams  # noqa: E402
from atomthink.queue.redis_streams import RedisStepQueue  # noqa: E402
from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR  # noqa: E402
from harness.servers import RedisServer, ServerProcess, WorkerProcess  # noqa: E402

SLOW = {"question": "What is the total of the bars?", "mode": "slow", "strategy": "beam", "candidates": "4",
        "beam_width": "2", "max_steps": "4"}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def solves_per_second(url: str, concurrency: int, total: int, image: bytes | None) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with semaphore:
                files = {"image": ("f.png", image)} if image else None
                response = await client.post(f"{url}/solve", data={**SLOW, "seed": str(i)}, files=files)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        return total / (time.perf_counter() - started)


def throughput_table(args: argparse.Namespace, redis: RedisServer, image: bytes | None, logdir: Path) -> None:
    print("\n## Solves per second, slow mode (beam, 4 candidates, width 2, 4 steps)")
    print("| concurrency | batching on (16 jobs / 5 ms) | batch size 1 | ratio |")
    print("|---|---|---|---|")
    results: dict[tuple[str, int], float] = {}
    for label, batch in (("on", "16"), ("off", "1")):
        env = {
            "ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": redis.url, "ATOMTHINK_KEY_PREFIX": f"bench-{label}",
            "ATOMTHINK_POLICY_MODEL": args.policy_model, "ATOMTHINK_PRM_MODEL": args.prm_model,
            "ATOMTHINK_POLICY_BATCH_SIZE": batch, "ATOMTHINK_PRM_BATCH_SIZE": batch,
            "ATOMTHINK_POLICY_MAX_WAIT_MS": "5", "ATOMTHINK_PRM_MAX_WAIT_MS": "5",
            "ATOMTHINK_MAX_STEP_TOKENS": str(args.max_step_tokens), "ATOMTHINK_TORCH_THREADS": "1",
        }  # fmt: skip
        with ServerProcess(["gateway"], env, ready_path="/healthz", log_path=logdir / f"gateway-{label}.log") as gw:
            workers = [WorkerProcess(r, env, logdir / f"workers-{label}.log") for r in ("policy", "prm")]
            try:
                deadline = time.monotonic() + 120
                while httpx.get(f"{gw.url}/readyz").status_code != 200:
                    if time.monotonic() > deadline:
                        raise TimeoutError("workers did not come up")
                    time.sleep(0.2)
                asyncio.run(solves_per_second(gw.url, 2, 4, image))  # warm-up
                for concurrency in (1, 4, 16):
                    total = max(args.requests, concurrency) if concurrency > 1 else max(4, args.requests // 4)
                    results[(label, concurrency)] = asyncio.run(solves_per_second(gw.url, concurrency, total, image))
            finally:
                for worker in workers:
                    worker.terminate()
    for concurrency in (1, 4, 16):
        on, off = results[("on", concurrency)], results[("off", concurrency)]
        print(f"| {concurrency} | {on:.2f} | {off:.2f} | {on / off:.2f}x |")


async def queue_overhead(url: str, jobs: int, concurrency: int) -> None:
    gateway = RedisStepQueue(url, prefix="bench-overhead")
    worker = RedisStepQueue(url, prefix="bench-overhead")
    pickups: list[float] = []
    replies_written: dict[str, float] = {}
    deliveries: list[float] = []
    stop = asyncio.Event()

    async def serve() -> None:
        while not stop.is_set():
            jobs = await worker.take("policy", 64, 0.0)
            for job in jobs:
                pickups.append((time.time() - job.enqueued_at) * 1000)
                replies_written[job.job_id] = time.perf_counter()
            await worker.reply([(job, PolicyResult(job_id=job.job_id, request_id=job.request_id)) for job in jobs])

    async def submit(i: int) -> None:
        job = PolicyJob(request_id=f"r{i}", question="q", sampling=SamplingParams())
        await gateway.call(job, timeout_s=30)
        deliveries.append((time.perf_counter() - replies_written.pop(job.job_id)) * 1000)

    server = asyncio.create_task(serve())
    semaphore = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> None:
        async with semaphore:
            await submit(i)

    await asyncio.gather(*(limited(i) for i in range(50)))  # warm-up
    pickups.clear()
    deliveries.clear()
    await asyncio.gather(*(limited(i) for i in range(jobs)))
    stop.set()
    await server
    await gateway.close()
    await worker.close()
    print(
        f"| {concurrency} | {jobs} | {percentile(pickups, 0.5):.2f} | {percentile(pickups, 0.99):.2f} | "
        f"{percentile(deliveries, 0.5):.2f} | {percentile(deliveries, 0.99):.2f} | {statistics.mean(pickups):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy-model", default=str(DEFAULT_POLICY_DIR))
    parser.add_argument("--prm-model", default=str(DEFAULT_PRM_DIR))
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level (default 32)")
    parser.add_argument("--max-step-tokens", type=int, default=24)
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "examples" / "figure.png")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    image = args.image.read_bytes() if args.image.is_file() else None
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as redis:
        print(f"policy: {args.policy_model}\nprm: {args.prm_model}\nredis-server on port {redis.port}")
        print("\n## Queue overhead per job (worker answers at once), milliseconds")
        print("| concurrency | jobs | pick-up p50 | pick-up p99 | reply p50 | reply p99 | pick-up mean |")
        print("|---|---|---|---|---|---|---|")
        for concurrency in (1, 16):
            asyncio.run(queue_overhead(redis.url, 2000, concurrency))
        if not args.skip_throughput:
            throughput_table(args, redis, image, Path(tmp))


if __name__ == "__main__":
    main()
