"""The Redis Streams queue on a real Redis: acknowledgement, redelivery, dead letters, limits, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from atomthink.errors import Overloaded
from atomthink.protocol import JobError, PolicyJob, PolicyResult, PrmJob, PrmResult, SamplingParams
from atomthink.queue.memory import InMemoryStepQueue
from atomthink.queue.redis_streams import RedisStepQueue
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.integration


def _job(request_id: str = "req") -> PolicyJob:
    return PolicyJob(request_id=request_id, question="What is A?", sampling=SamplingParams(n=2))


@contextlib.asynccontextmanager
async def three_queues(prefix: str) -> AsyncIterator[tuple[RedisStepQueue, RedisStepQueue, RedisStepQueue]]:
    """A gateway-side queue and two worker-side queues (as if in three processes) sharing one prefix."""
    made = [
        RedisStepQueue(TEST_REDIS_URL, prefix=prefix, visibility_timeout_s=0.3, max_deliveries=2, max_queue_length=5)
        for _ in range(3)
    ]
    try:
        yield made[0], made[1], made[2]
    finally:
        for queue in made:
            await queue.close()


async def test_result_travels_back_and_the_job_is_acknowledged(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        call = asyncio.create_task(gateway.call(_job(), timeout_s=10))
        [job] = await worker.take("policy", max_jobs=8, max_wait_s=0.05)
        assert isinstance(job, PolicyJob) and job.sampling.n == 2
        await worker.reply([(job, PolicyResult(job_id=job.job_id, request_id=job.request_id))])
        result = await call
        assert isinstance(result, PolicyResult) and result.job_id == job.job_id and result.error is None
        stats = await gateway.queue_stats()
        assert stats["policy"].waiting == 0 and stats["policy"].pending == 0


async def test_a_batch_collects_jobs_from_several_requests(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        calls = [asyncio.create_task(gateway.call(_job(f"r{i}"), timeout_s=10)) for i in range(4)]
        await asyncio.sleep(0.1)
        jobs = await worker.take("policy", max_jobs=8, max_wait_s=0.05)
        assert sorted(job.request_id for job in jobs) == ["r0", "r1", "r2", "r3"]
        for job in jobs:
            await worker.reply([(job, PolicyResult(job_id=job.job_id, request_id=job.request_id))])
        await asyncio.gather(*calls)


async def test_a_lone_job_is_not_held_to_fill_a_batch(redis_prefix: str) -> None:
    """Static batches wait ``max_wait_s`` to fill only when more than one job was queued (there is load); a lone job
    runs at once. The memory queue follows the same rule."""
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        memory = InMemoryStepQueue()
        for source, client in ((worker, gateway), (memory, memory)):
            call = asyncio.create_task(client.call(_job("lone"), timeout_s=10))
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            [job] = await source.take("policy", max_jobs=8, max_wait_s=5.0)
            assert time.perf_counter() - started < 2.5, "a lone job was held for the fill wait"
            await source.reply([(job, PolicyResult(job_id=job.job_id, request_id=job.request_id))])
            await call
            calls = [asyncio.create_task(client.call(_job(f"r{i}"), timeout_s=10)) for i in range(2)]
            await asyncio.sleep(0.05)
            filling = asyncio.create_task(source.take("policy", max_jobs=3, max_wait_s=5.0))
            await asyncio.sleep(0.3)
            assert not filling.done(), "two queued jobs: the batch waits to fill"
            calls.append(asyncio.create_task(client.call(_job("r2"), timeout_s=10)))
            jobs = await filling
            assert sorted(j.request_id for j in jobs) == ["r0", "r1", "r2"]
            await source.reply([(j, PolicyResult(job_id=j.job_id, request_id=j.request_id)) for j in jobs])
            await asyncio.gather(*calls)


async def test_unacknowledged_job_is_redelivered_then_dead_lettered(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, stuck_worker, live_worker = queues
        call = asyncio.create_task(gateway.call(_job(), timeout_s=10))
        [first] = await stuck_worker.take("policy", 1, 0.0)  # taken, never answered: the worker hung or died
        await asyncio.sleep(0.35)
        [again] = await live_worker.take("policy", 1, 0.0)  # claimed after the visibility timeout
        assert again.job_id == first.job_id
        await asyncio.sleep(0.35)
        live_worker._last_claim.clear()  # let this worker run its claim pass now rather than in a quarter timeout
        assert await live_worker.take("policy", 1, 0.0) == []  # third delivery > max_deliveries: dead letter
        result = await call
        assert result.error == JobError(code="dead_letter", message=result.error.message, recoverable=False)
        client = redis.asyncio.Redis.from_url(TEST_REDIS_URL)
        try:
            [(_, fields)] = await client.xrange(f"{redis_prefix}:dead")
            assert fields[b"role"] == b"policy" and b"delivered 3 times" in fields[b"reason"]
            assert await client.xlen(f"{redis_prefix}:stream:policy") == 0
        finally:
            await client.aclose()


async def test_a_handed_back_job_goes_to_another_worker_at_once_then_dead_letters(redis_prefix: str) -> None:
    """``release`` (a worker whose engine died): the job is read again at once by another worker, with no visibility
    timeout to wait out, and its result reaches the gateway; handed back past ``max_deliveries`` it dead-letters."""
    async with three_queues(redis_prefix) as queues:
        gateway, dying, live = queues
        call = asyncio.create_task(gateway.call(_job("handed"), timeout_s=10))
        [held] = await dying.take("policy", 1, 0.0)
        await dying.release([held])
        stats = await gateway.queue_stats()
        assert stats["policy"].pending == 0 and stats["policy"].waiting == 1, "old entry acked, the job queued again"
        started = time.perf_counter()
        [again] = await live.take("policy", 1, 0.0)
        assert again == held and time.perf_counter() - started < 0.3, "read at once (visibility timeout is 0.3 s)"
        await live.reply([(again, PolicyResult(job_id=again.job_id, request_id=again.request_id))])
        assert (await call).error is None
        doomed = asyncio.create_task(gateway.call(_job("doomed"), timeout_s=10))
        for _ in range(3):  # max_deliveries=2: the third hand-back dead-letters it
            [job] = await dying.take("policy", 1, 0.0)
            await dying.release([job])
        result = await doomed
        assert result.error is not None and result.error.code == "dead_letter"
        assert "handed back 3 times" in result.error.message
        stats = await gateway.queue_stats()
        assert stats["policy"].pending == 0 and stats["policy"].waiting == 0


async def test_the_memory_queue_takes_a_handed_back_job_again() -> None:
    queue = InMemoryStepQueue()
    call = asyncio.create_task(queue.call(_job("handed"), timeout_s=10))
    [held] = await queue.take("policy", 1, 0.0)
    await queue.release([held])
    [again] = await queue.take("policy", 1, 0.0)
    assert again == held
    await queue.reply([(again, PolicyResult(job_id=again.job_id, request_id=again.request_id))])
    assert (await call).error is None


async def test_queue_length_limit_answers_overloaded(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, _, _ = queues
        calls = [asyncio.create_task(gateway.call(_job(f"r{i}"), timeout_s=5)) for i in range(5)]
        for _ in range(200):  # until all five are queued (a fixed sleep was too short on a loaded machine)
            if (await gateway.queue_stats())["policy"].waiting >= 5:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await gateway.call(_job("one-too-many"), timeout_s=5)
        for call in calls:
            call.cancel()


async def test_cancelled_requests_are_skipped_and_acknowledged(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        call = asyncio.create_task(gateway.call(PrmJob(request_id="gone", question="q", paths=[["a"]]), timeout_s=1))
        await asyncio.sleep(0.05)
        await gateway.cancel("gone")
        [job] = await worker.take("prm", 4, 0.0)
        assert await worker.is_cancelled(job.request_id)
        await worker.skip(job)
        assert (await gateway.queue_stats())["prm"].pending == 0
        call.cancel()


async def test_images_are_stored_once_under_their_hash(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        first = await gateway.put_image(b"\x89PNG fake bytes")
        assert await gateway.put_image(b"\x89PNG fake bytes") == first
        assert await worker.get_image(first) == b"\x89PNG fake bytes"
        with pytest.raises(KeyError):
            await worker.get_image("0" * 64)


async def test_heartbeats_count_live_workers(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, worker, other = queues
        await worker.heartbeat("policy", "w1")
        await other.heartbeat("prm", "w2")
        assert await gateway.workers_alive() == {"policy": 1, "prm": 1}
        await worker.forget_worker("policy", "w1")
        assert await gateway.workers_alive() == {"policy": 0, "prm": 1}


async def test_prm_results_round_trip(redis_prefix: str) -> None:
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        call = asyncio.create_task(gateway.call(PrmJob(request_id="r", question="q", paths=[["a", "b"]]), 10))
        [job] = await worker.take("prm", 4, 0.0)
        await worker.reply([(job, PrmResult(job_id=job.job_id, request_id="r", scores=[[0.25, 0.75]]))])
        assert (await call).scores == [[0.25, 0.75]]


async def test_a_reply_that_recreates_a_gone_gateways_stream_gives_it_a_ttl(redis_prefix: str) -> None:
    """A gateway's reply stream gone (the gateway closed it, or Redis restarted empty) while a worker holds one of
    its jobs: the late reply creates the stream again, and it must expire rather than stay forever."""
    async with three_queues(redis_prefix) as queues:
        gateway, worker, _ = queues
        call = asyncio.create_task(gateway.call(_job(), timeout_s=10))
        [job] = await worker.take("policy", 1, 0.05)
        call.cancel()
        client = redis.asyncio.Redis.from_url(TEST_REDIS_URL)
        try:
            reply_stream = f"{redis_prefix}:reply:{gateway.gateway_id}"
            await client.delete(reply_stream)
            await worker.reply([(job, PolicyResult(job_id=job.job_id, request_id=job.request_id))])
            assert await client.xlen(reply_stream) == 1
            assert 0 < await client.ttl(reply_stream) <= 3600
        finally:
            await client.aclose()


async def test_a_claim_that_races_the_first_workers_answer_drops_the_job(redis_prefix: str) -> None:
    """A slow (not dead) worker answers a job right after another worker claimed it past the visibility timeout: the
    claimer finds no pending entry and drops the job (it was answered), instead of failing its ``take``."""
    async with three_queues(redis_prefix) as queues:
        gateway, slow_worker, claimer = queues
        call = asyncio.create_task(gateway.call(_job(), timeout_s=10))
        [job] = await slow_worker.take("policy", 1, 0.0)
        await asyncio.sleep(0.35)  # past the visibility timeout
        claim = claimer.redis.xautoclaim

        async def claim_then_the_slow_worker_answers(*args: object, **kwargs: object) -> object:
            claimed = await claim(*args, **kwargs)
            await slow_worker.reply([(job, PolicyResult(job_id=job.job_id, request_id=job.request_id))])
            return claimed

        claimer.redis.xautoclaim = claim_then_the_slow_worker_answers  # the order of a real race, made certain
        assert await claimer.take("policy", 1, 0.0) == []
        assert (await call).error is None
        assert claimer._deliveries == {}
        stats = await gateway.queue_stats()
        assert stats["policy"].waiting == 0 and stats["policy"].pending == 0
