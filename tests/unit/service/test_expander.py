"""The queue expander on the real memory queue, answered as a worker answers: identical paths are scored once."""

from __future__ import annotations

import asyncio

import pytest

from atomthink.protocol import PrmJob, PrmResult
from atomthink.queue.memory import InMemoryStepQueue
from service.orchestrator.expander import QueueExpander, RequestSampling, union_s

SAMPLING = RequestSampling(temperature=0.7, top_p=0.9, top_k=50, max_step_tokens=32, max_answer_tokens=64)


async def score_through_queue(merge: bool) -> tuple[list[list[float]], PrmJob]:
    queue = InMemoryStepQueue()
    expander = QueueExpander(queue, request_id="r", question="q", image_id=None, sampling=SAMPLING, seed=1,
                             job_timeout_s=10, merge_duplicate_paths=merge)  # fmt: skip
    paths = [["a", "b"], ["a", "c"], ["a", "b"], ["a", "b"]]
    known = [[0.5], [0.5], [0.5], [0.5]]
    scoring = asyncio.create_task(expander.score(paths, known))
    [job] = await queue.take("prm", 1, 5.0)
    assert isinstance(job, PrmJob)
    # a scripted PRM: the last step "b" scores 0.9, "c" 0.2
    scores = [[*k, {"b": 0.9, "c": 0.2}[p[-1]]] for p, k in zip(job.paths, job.known_scores, strict=True)]
    await queue.reply([(job, PrmResult(job_id=job.job_id, request_id="r", scores=scores))])
    result = await scoring
    await queue.close()
    return result, job


async def test_identical_paths_in_one_job_are_scored_once_and_get_the_same_scores() -> None:
    merged, job = await score_through_queue(merge=True)
    assert job.paths == [["a", "b"], ["a", "c"]] and job.known_scores == [[0.5], [0.5]]
    assert merged == [[0.5, 0.9], [0.5, 0.2], [0.5, 0.9], [0.5, 0.9]]
    plain, job = await score_through_queue(merge=False)
    assert len(job.paths) == 4 and plain == merged, "merging changes the work, never the scores"


def test_queue_wall_counts_waits_side_by_side_once() -> None:
    # two jobs sent together wait 3 and 5 ms, a later one 2 ms, one overlapping the first two's end
    waits = [(0.0, 0.003), (0.0, 0.005), (0.010, 0.012), (0.004, 0.006)]
    assert union_s(waits) == pytest.approx(0.006 + 0.002)
    assert union_s([]) == 0.0
