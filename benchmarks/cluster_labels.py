"""Rollout labels through the Redis cluster with 1, 2, ... policy workers: problems/s for each (issue 26 item 3).

Each run starts N ``atomthink worker policy`` processes (one torch thread each) on a private Redis, waits until
all of them are alive, then labels the same problems (same seeds) with ``atomthink train cluster-labels``'s code
and prints problems/s, jobs/s and the machine's load average. Prints figures; asserts nothing (machines are noisy).

    nice -n 15 .venv/bin/python benchmarks/cluster_labels.py --data /tmp/labels-data --problems 200 --workers 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from atomthink.queue.redis_streams import RedisStepQueue  # noqa: E402
from atomthink.settings import Settings  # noqa: E402
from harness.servers import RedisServer, WorkerProcess  # noqa: E402
from research.training.cluster_labels import ClusterLabelConfig, label_with_cluster  # noqa: E402


async def wait_alive(url: str, prefix: str, n: int, timeout_s: float = 300) -> None:
    queue = RedisStepQueue(url, prefix=prefix)
    try:
        deadline = time.monotonic() + timeout_s
        while (await queue.workers_alive())["policy"] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} policy workers not alive within {timeout_s} s")
            await asyncio.sleep(0.5)
    finally:
        await queue.close()


def run(args: argparse.Namespace, redis: RedisServer, n_workers: int, logdir: Path) -> dict[str, object]:
    prefix = f"labels-{n_workers}w"
    env = {
        "ATOMTHINK_QUEUE": "redis",
        "ATOMTHINK_REDIS_URL": redis.url,
        "ATOMTHINK_KEY_PREFIX": prefix,
        "ATOMTHINK_POLICY_MODEL": args.policy_model,
        "ATOMTHINK_TORCH_THREADS": "1",
        "ATOMTHINK_POLICY_BATCH_SIZE": str(args.batch_size),
        "ATOMTHINK_POLICY_MAX_WAIT_MS": "20",
        "ATOMTHINK_JOB_TIMEOUT_S": "600",
    }
    if args.max_step_tokens:
        env["ATOMTHINK_MAX_STEP_TOKENS"] = str(args.max_step_tokens)
    workers = [WorkerProcess("policy", env, log_path=logdir / f"policy-{n_workers}-{i}.log") for i in range(n_workers)]
    try:
        asyncio.run(wait_alive(redis.url, prefix, n_workers))
        settings = Settings(
            queue="redis",
            redis_url=redis.url,
            key_prefix=prefix,
            policy_model=args.policy_model,
            job_timeout_s=600,
            max_step_tokens=args.max_step_tokens,
        )
        cfg = ClusterLabelConfig(
            data=args.data,
            out=str(logdir / f"out-{n_workers}"),
            problems=args.problems,
            samples=args.samples,
            rollouts=args.rollouts,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            concurrency=args.concurrency,
        )
        load_before = os.getloadavg()
        summary = asyncio.run(label_with_cluster(cfg, settings, progress=False))
        load_after = os.getloadavg()
    finally:
        for worker in workers:
            worker.terminate()
    return {"workers": n_workers, **summary, "loadavg_before": load_before, "loadavg_after": load_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="problems (a data-engine folder, MathVista or MathVerse file)")
    parser.add_argument("--policy-model", default=str(REPO_ROOT / "models" / "atomthink-tiny-policy"))
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of paths and rollouts")
    parser.add_argument("--top-p", type=float, default=None, help="default: the prompt preset's")
    parser.add_argument("--top-k", type=int, default=None, help="0 = off; default: the prompt preset's")
    parser.add_argument("--concurrency", type=int, default=64, help="problems labelled at once")
    parser.add_argument("--batch-size", type=int, default=32, help="jobs per worker model call")
    parser.add_argument("--max-step-tokens", type=int, default=None)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as redis:
        for n in args.workers:
            row = run(args, redis, n, Path(tmp))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    print("\n| policy workers | problems | paths | rollouts | policy jobs | seconds | problems/s | jobs/s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        load = "{:.1f} -> {:.1f}".format(r["loadavg_before"][0], r["loadavg_after"][0])  # type: ignore[index]
        print(f"| {r['workers']} | {r['problems']} | {r['paths']} | {r['rollouts']} | {r['policy_jobs']} | "
              f"{r['seconds']} | {r['problems_per_s']} | {r['jobs_per_s']} | {load} |")  # fmt: skip


if __name__ == "__main__":
    main()
