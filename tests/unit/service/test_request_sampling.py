"""What a request's sampling fields put on the policy jobs: taken off the real memory queue, as a worker takes them."""

from __future__ import annotations

import asyncio
import contextlib
import time

from atomthink.protocol import PolicyJob
from atomthink.queue.memory import InMemoryStepQueue
from atomthink.settings import DEFAULT_POLICY_DIR, Settings
from service.orchestrator.solver import Solver
from service.schemas import SolveParams


async def first_job(settings: Settings, params: SolveParams) -> PolicyJob:
    queue = InMemoryStepQueue()
    solver = Solver(queue, settings)
    solving = asyncio.create_task(solver.solve(params))
    try:
        [job] = await queue.take("policy", 1, 5.0)
    finally:
        solving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await solving
        await queue.close()
    assert isinstance(job, PolicyJob)
    return job


async def test_request_top_k_top_p_and_temperature_reach_the_job() -> None:
    settings = Settings(policy_model=str(DEFAULT_POLICY_DIR), job_timeout_s=30)
    job = await first_job(settings, SolveParams(question="1 + 1?", mode="quick", temperature=1.3, top_p=0.5, top_k=7))
    assert (job.sampling.temperature, job.sampling.top_p, job.sampling.top_k) == (1.3, 0.5, 7)
    assert job.expires_at is not None and 25 < job.expires_at - time.time() <= 30, "expires after the job timeout"


async def test_unset_top_k_takes_the_setting_then_the_preset() -> None:
    preset = await first_job(Settings(policy_model=str(DEFAULT_POLICY_DIR)), SolveParams(question="1 + 1?"))
    assert preset.sampling.top_k == 50, "the tiny preset's"
    configured = await first_job(Settings(policy_model=str(DEFAULT_POLICY_DIR), top_k=0), SolveParams(question="2?"))
    assert configured.sampling.top_k == 0, "the server's setting"
