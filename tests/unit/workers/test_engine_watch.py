"""The worker's engine watch on scripted engines (the real vLLM engine's faults: tests/integration/test_vllm_faults.py).

A policy worker whose engine dies (its jobs fail with ``EngineDead``) or hangs (jobs and probes never return) must
leave the live set, hand every job it holds back to the queue and return from ``run`` marked unhealthy; a healthy
worker beside it then answers every request. The queue is the real in-memory queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from atomthink.prompts import TINY, PromptPreset
from atomthink.protocol import Candidate, PolicyJob, PolicyResult, SamplingParams
from atomthink.queue.memory import InMemoryStepQueue
from workers.backends.base import EngineDead, EnginePolicyBackend, GenerationRequest, HealthChecked
from workers.worker import PolicyWorker


class ScriptedEngine:
    """An engine backend: answers (``healthy``), fails every job and probe (``dead``) or never answers (``hung``)."""

    preset: PromptPreset = TINY

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0
        self.probes = 0

    @property
    def model_calls(self) -> int:
        return self.calls

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Candidate]]:
        raise AssertionError("an engine backend is fed continuously")

    async def agenerate(self, request: GenerationRequest) -> list[Candidate]:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.behaviour == "dead":
            raise EngineDead("the scripted engine died")
        if self.behaviour == "hung":
            await asyncio.Event().wait()
        return [Candidate(text=f"step of {request.question}", num_tokens=3, finish_reason="delimiter")]

    async def check_health(self) -> None:
        self.probes += 1
        if self.behaviour == "dead":
            raise EngineDead("the scripted engine died")
        if self.behaviour == "hung":
            await asyncio.Event().wait()


def worker(queue: InMemoryStepQueue, engine: ScriptedEngine) -> PolicyWorker:
    return PolicyWorker(
        queue, engine, batch_size=4, max_wait_s=0.0, max_inflight=8, health_interval_s=0.05, probe_timeout_s=0.3
    )


def job(i: int) -> PolicyJob:
    return PolicyJob(request_id=f"r{i}", question=f"q{i}", sampling=SamplingParams(n=1))


async def hand_over(behaviour: str) -> None:
    queue = InMemoryStepQueue(heartbeat_ttl_s=60)
    engine = ScriptedEngine(behaviour)
    assert isinstance(engine, EnginePolicyBackend) and isinstance(engine, HealthChecked)
    failing = worker(queue, engine)
    calls = [asyncio.create_task(queue.call(job(i), timeout_s=30)) for i in range(6)]
    await asyncio.wait_for(failing.run(), 10)  # returns by itself: no stop() was called
    assert failing.unhealthy is not None and engine.calls > 0
    assert (await queue.workers_alive())["policy"] == 0, "the unhealthy worker left the live set"
    assert not any(call.done() for call in calls), "no request was answered with the dead engine's failure"
    healthy = worker(queue, ScriptedEngine("healthy"))
    running = asyncio.create_task(healthy.run())
    results = await asyncio.wait_for(asyncio.gather(*calls), 10)
    healthy.stop()
    await running
    assert all(isinstance(r, PolicyResult) and r.error is None for r in results), results
    assert [r.candidates[0].text for r in results] == [f"step of q{i}" for i in range(6)]
    assert healthy.unhealthy is None


async def test_a_dead_engine_hands_its_jobs_to_a_healthy_worker() -> None:
    await hand_over("dead")


async def test_a_hung_engine_fails_its_probe_and_hands_its_jobs_back() -> None:
    await hand_over("hung")


async def test_a_healthy_engine_is_probed_and_keeps_serving() -> None:
    queue = InMemoryStepQueue()
    engine = ScriptedEngine("healthy")
    serving = worker(queue, engine)
    running = asyncio.create_task(serving.run())
    await asyncio.sleep(0.4)
    result = await queue.call(job(0), timeout_s=5)
    serving.stop()
    await running
    assert engine.probes >= 3 and serving.unhealthy is None and result.error is None
