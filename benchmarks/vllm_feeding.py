"""Benchmark of issue 16 on the real vLLM CPU engine: how workers feed it. Prints figures; asserts nothing.

Slow beam (4 candidates, width 2, at most 6 steps) on held-out text-dominant problems, at several concurrencies,
for three ways of feeding the engine:

- ``batch1``: static batches of one job (peers that score candidates one by one);
- ``static``: static batches of up to 16 jobs (5 ms fill), each batch awaited whole before the next is taken;
- ``continuous``: up to 64 jobs in flight, a new job taken as soon as one finishes.

The policy is ``atomthink-tiny-text-policy`` on an in-process ``AsyncLLM`` (prefix caching on and off); the PRM is
the shipped tiny PRM behind a real ``vllm serve`` (completion logprobs), fed the same way as the policy. Two paths:
``inprocess`` (solver and workers in this process, memory queue) and ``redis`` (a gateway, ``--redis-policy-workers``
policy worker processes with an engine each and one PRM worker, on a private Redis).

Each engine's compute threads are pinned (``VLLM_CPU_OMP_THREADS_BIND``): the PRM server on ``--prm-cores``, the
policy engines on ``--policy-cores``. vLLM's default (``auto``) binds every engine to the same cores, and two engines
that share cores spin against each other: on the 2-core project machine that halved the solves per second.

    ./scripts/install-vllm.sh
    .venv-vllm/bin/python benchmarks/vllm_feeding.py                 # the full table (~20 min on 2 cores)
    .venv-vllm/bin/python benchmarks/vllm_feeding.py --concurrency 1,16 --paths inprocess --caching on

"Overhead" is what a request spends neither in a policy nor in a PRM job (orchestration) plus its jobs' time in the
queue before a worker took them, as a share of its wall time (``timings_ms``: total - policy - prm + queue).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from harness.servers import VLLM_CPU_ENV, RedisServer, ServerProcess, VllmServer, WorkerProcess  # noqa: E402
from research.data.engine import make_problem  # noqa: E402
from research.data.text_dominant import text_question  # noqa: E402

TEXT_POLICY = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
PRM = REPO_ROOT / "models" / "atomthink-tiny-prm"
HELDOUT_SEED = 20261125
MAX_STEPS = 6
"""The longest reference solution has 8 steps; 6 bounds the paths a weak policy leaves unfinished."""
MODES: dict[str, dict[str, Any]] = {
    "batch1": {"engine_feeding": "static", "policy_batch_size": 1, "prm_batch_size": 1},
    "static": {"engine_feeding": "static", "policy_batch_size": 16, "prm_batch_size": 16,
               "policy_max_wait_ms": 5.0, "prm_max_wait_ms": 5.0},
    "continuous": {"engine_feeding": "continuous", "policy_max_inflight": 64, "prm_max_inflight": 64},
}  # fmt: skip


@dataclass
class Cell:
    path: str
    caching: str
    mode: str
    concurrency: int
    requests: int
    wall_s: float
    latencies_s: list[float]
    tokens: int
    overhead: float
    right: int

    def row(self) -> str:
        p50 = statistics.median(self.latencies_s)
        p95 = sorted(self.latencies_s)[min(len(self.latencies_s) - 1, int(0.95 * len(self.latencies_s)))]
        return (
            f"| {self.path} | {self.caching} | {self.mode} | {self.concurrency} | {self.requests / self.wall_s:.2f} "
            f"| {p50 * 1000:.0f} | {p95 * 1000:.0f} | {self.tokens / self.wall_s:.0f} | {100 * self.overhead:.1f} "
            f"| {self.right}/{self.requests} |"
        )


def body(i: int) -> dict[str, Any]:
    problem = make_problem(HELDOUT_SEED, i)
    return {"question": text_question(problem), "mode": "slow", "strategy": "beam", "candidates": 4,
            "beam_width": 2, "max_steps": MAX_STEPS, "seed": i}  # fmt: skip


async def drive(concurrency: int, total: int, solve: Callable[[int], Awaitable[dict[str, Any]]]) -> tuple:
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    answers: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        async with semaphore:
            started = time.perf_counter()
            answers.append({**await solve(i), "i": i})
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - started
    tokens = sum(a["stats"]["generated_tokens"] for a in answers)
    t = [a["timings_ms"] for a in answers]
    overhead = statistics.mean(max(0.0, x["total"] - x["policy"] - x["prm"] + x["queue_wall"]) / x["total"] for x in t)
    right = sum(a["answer"] == str(make_problem(HELDOUT_SEED, a["i"]).value_answer) for a in answers)  # no options
    return wall, latencies, tokens, overhead, right


def requests_for(concurrency: int, args: argparse.Namespace) -> int:
    return max(args.min_requests, args.waves * concurrency)


def skipped(mode: str, concurrency: int, args: argparse.Namespace) -> bool:
    """Batch size 1 serializes every job: past ``--batch1-max-concurrency`` it only repeats the same rate, slowly."""
    return mode == "batch1" and concurrency > args.batch1_max_concurrency


async def inprocess_cells(args: argparse.Namespace, prm_url: str, caching: str) -> list[Cell]:
    from atomthink.settings import Settings
    from atomthink_serve.embedded import build_runtime
    from service.schemas import SolveParams
    from workers.backends.openai_prm import OpenAICompletionsPrm
    from workers.backends.vllm_policy import VllmPolicy

    base = {"policy_backend": "vllm", "policy_model": str(TEXT_POLICY), "dtype": "float32", "vllm_max_model_len": 1024,
            "vllm_enforce_eager": True, "vllm_enable_chunked_prefill": False,
            "vllm_enable_prefix_caching": caching == "on", "prm_backend": "openai-completions",
            "prm_base_url": prm_url, "prm_model": str(PRM), "job_timeout_s": 600}  # fmt: skip
    settings = Settings(**base)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.policy_cores  # read when the engine process starts
    policy = await asyncio.to_thread(VllmPolicy.from_settings, settings)
    prm = await asyncio.to_thread(OpenAICompletionsPrm.from_settings, settings)
    cells = []
    try:
        for mode in args.modes:
            for concurrency in args.concurrency:
                if skipped(mode, concurrency, args):
                    continue
                total = requests_for(concurrency, args)
                async with build_runtime(Settings(**base, **MODES[mode]), policy=policy, prm=prm) as runtime:

                    async def solve(i: int, runtime: Any = runtime) -> dict[str, Any]:
                        result = await runtime.solve(SolveParams(**body(i)))
                        return dict(result.model_dump(mode="json"))

                    await drive(1, 1, solve)  # warm-up
                    cell = Cell("inprocess", caching, mode, concurrency, total, *await drive(concurrency, total, solve))
                print(cell.row(), flush=True)
                cells.append(cell)
    finally:
        policy.close()
        prm.close()
    return cells


def wait_ready(gateway: ServerProcess, workers: list[WorkerProcess], logdir: Path) -> None:
    deadline = time.monotonic() + 900
    while httpx.get(gateway.url + "/readyz", timeout=5).json()["workers"] != {"policy": len(workers) - 1, "prm": 1}:
        if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
            raise RuntimeError(f"workers did not start; logs in {logdir}")
        time.sleep(1)


async def redis_cells(args: argparse.Namespace, prm_url: str, caching: str, logdir: Path) -> list[Cell]:
    cells = []
    with RedisServer(logdir) as redis:
        for mode in args.modes:
            env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": redis.url, "ATOMTHINK_KEY_PREFIX": mode,
                   "ATOMTHINK_POLICY_MODEL": str(TEXT_POLICY), "ATOMTHINK_PRM_MODEL": str(PRM),
                   "ATOMTHINK_JOB_TIMEOUT_S": "600", "ATOMTHINK_PRM_BACKEND": "openai-completions",
                   "ATOMTHINK_PRM_BASE_URL": prm_url,
                   **{f"ATOMTHINK_{k.upper()}": str(v) for k, v in MODES[mode].items()}}  # fmt: skip
            engine = {**env, **VLLM_CPU_ENV, "ATOMTHINK_POLICY_BACKEND": "vllm", "ATOMTHINK_DTYPE": "float32",
                      "ATOMTHINK_VLLM_MAX_MODEL_LEN": "1024", "ATOMTHINK_VLLM_ENFORCE_EAGER": "true",
                      "ATOMTHINK_VLLM_ENABLE_CHUNKED_PREFILL": "false",
                      "ATOMTHINK_VLLM_ENABLE_PREFIX_CACHING": str(caching == "on").lower(),
                      "VLLM_CPU_OMP_THREADS_BIND": args.policy_cores}  # fmt: skip
            python = REPO_ROOT / ".venv-vllm" / "bin" / "python"
            workers = [
                WorkerProcess("policy", engine, logdir / f"{mode}-policy{k}.log", python=python)
                for k in range(args.redis_policy_workers)
            ]
            workers.append(WorkerProcess("prm", env, logdir / f"{mode}-prm.log", python=python))
            try:
                with ServerProcess(["gateway"], env, log_path=logdir / f"{mode}-gateway.log", program=(
                        str(python), "-m", "atomthink_serve.cli")) as gateway:  # fmt: skip
                    await asyncio.to_thread(wait_ready, gateway, workers, logdir)
                    async with httpx.AsyncClient(timeout=900) as client:

                        async def solve(i: int, client: httpx.AsyncClient = client, url: str = gateway.url) -> Any:
                            response = await client.post(url + "/solve", json=body(i))
                            response.raise_for_status()
                            return response.json()

                        await drive(len(workers), len(workers), solve)  # warm-up (every worker)
                        for concurrency in args.concurrency:
                            if skipped(mode, concurrency, args):
                                continue
                            total = requests_for(concurrency, args)
                            cell = Cell("redis", caching, mode, concurrency, total, *await drive(concurrency, total,
                                                                                                  solve))  # fmt: skip
                            print(cell.row(), flush=True)
                            cells.append(cell)
            finally:
                for worker in workers:
                    worker.terminate()
    return cells


def summary(cells: list[Cell]) -> None:
    print("\n## Against the issue's targets (solves/s at concurrency 16; overhead at concurrency 1)")
    keyed = {(c.path, c.caching, c.mode, c.concurrency): c for c in cells}
    for path, caching in sorted({(c.path, c.caching) for c in cells}):
        rate = {m: keyed[(path, caching, m, 16)] for m in MODES if (path, caching, m, 16) in keyed}
        if "continuous" in rate:
            cont = rate["continuous"].requests / rate["continuous"].wall_s
            for other in ("batch1", "static"):
                if other in rate:
                    ratio = cont / (rate[other].requests / rate[other].wall_s)
                    print(f"- {path}, caching {caching}: continuous / {other} = {ratio:.2f}x")
        for mode in MODES:
            one = keyed.get((path, caching, mode, 1))
            if one:
                print(f"- {path}, caching {caching}, {mode}: overhead at concurrency 1 = {100 * one.overhead:.1f}%")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--modes", default="batch1,static,continuous")
    parser.add_argument("--paths", default="inprocess,redis")
    parser.add_argument("--caching", default="on,off", help="prefix caching of the policy engine (in process)")
    parser.add_argument("--redis-caching", default="on", help="prefix caching of the Redis path's engines")
    parser.add_argument("--waves", type=int, default=1, help="requests per cell = waves x concurrency ...")
    parser.add_argument("--min-requests", type=int, default=4, help="... but at least this many")
    parser.add_argument("--batch1-max-concurrency", type=int, default=16)
    parser.add_argument("--redis-policy-workers", type=int, default=1, help="policy worker processes (redis path)")
    parser.add_argument("--prm-cores", default="0", help="VLLM_CPU_OMP_THREADS_BIND of the PRM server (auto: vLLM's)")
    parser.add_argument("--policy-cores", default="1", help="... and of every policy engine")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.modes = args.modes.split(",")
    os.environ.update(VLLM_CPU_ENV)
    print(f"# vLLM feeding benchmark, {os.cpu_count()} CPUs, policy {TEXT_POLICY.name}, PRM {PRM.name}")
    print("| path | prefix caching | feeding | concurrency | solves/s | p50 ms | p95 ms | gen tokens/s | overhead % "
          "| right |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    cells: list[Cell] = []
    print(
        f"# engine cores: PRM {args.prm_cores}, policy {args.policy_cores}; prefix caching of the Redis path's "
        f"engines {args.redis_caching}; {args.redis_policy_workers} policy worker(s) on Redis"
    )
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = args.prm_cores
    with tempfile.TemporaryDirectory() as tmp, VllmServer(PRM, "prm", log_path=Path(tmp) / "prm.log") as prm:
        for path in args.paths.split(","):
            for caching in (args.caching if path == "inprocess" else args.redis_caching).split(","):
                if path == "inprocess":
                    cells += await inprocess_cells(args, prm.url + "/v1", caching)
                else:
                    cells += await redis_cells(args, prm.url + "/v1", caching, Path(tmp))
    summary(cells)


if __name__ == "__main__":
    asyncio.run(main())
