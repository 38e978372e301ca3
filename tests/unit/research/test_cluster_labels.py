"""Math-Shepherd labelling through a job client (an algorithm test on a scripted client: which prefixes are rescued,
how many jobs and rollouts are spent, and what the jobs carry)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from atomthink.prompts import TINY
from atomthink.protocol import Candidate, JobError, PolicyJob, PolicyResult
from atomthink.settings import Settings
from research.eval.datasets import EvalItem
from research.training.cluster_labels import ClusterLabelConfig, ClusterLabeller, label_with_cluster, record_of

RIGHT = "To sum up, the final answer is: 5"
WRONG = "To sum up, the final answer is: 7"


class ScriptedClient:
    """Answers every step job with a final step: right unless the history holds a step containing ``bad``."""

    def __init__(self) -> None:
        self.jobs: list[PolicyJob] = []

    async def call(self, job: PolicyJob, timeout_s: float) -> PolicyResult:
        self.jobs.append(job)
        text = WRONG if any("bad" in s for s in job.steps) else RIGHT
        candidates = [Candidate(text=text, num_tokens=3, finish_reason="eos")] * job.sampling.n
        return PolicyResult(job_id=job.job_id, request_id=job.request_id, candidates=candidates)

    async def put_image(self, data: bytes) -> str:
        return "img"


def _labeller(client: ScriptedClient) -> ClusterLabeller:
    cfg = ClusterLabelConfig(data="-", out="-", samples=2, rollouts=2)
    return ClusterLabeller(client, cfg, TINY, max_new_tokens=16, job_timeout_s=5)  # type: ignore[arg-type]


def test_first_unrescued_step_and_all_after_it_are_negative() -> None:
    item = EvalItem("t", "p1", "q?", None, None, "5", "integer")
    paths = [
        ["good one", "good two", RIGHT],  # right: all +, no rollouts
        ["good one", "bad two", "good three", WRONG],  # rescued after step 1, not after step 2
        ["bad one", WRONG],
        ["good one", WRONG],  # only the final step is wrong
    ]
    client = ScriptedClient()
    out = asyncio.run(_labeller(client).label_paths(item, "img", paths))
    assert out.labels == [["+", "+", "+"], ["+", "-", "-", "-"], ["-", "-"], ["+", "-"]]
    assert out.correct == [True, False, False, False]
    # one job per prefix (n=2 completions, each final at once): path 2 at depths 1, 2; paths 3 and 4 at depth 1
    assert out.rollouts == 8 and out.jobs == 4 == len(client.jobs)
    assert all(j.sampling.n == 2 and j.image_id == "img" and j.prompt_preset == "tiny" for j in client.jobs)
    assert sorted(len(j.steps) for j in client.jobs) == [1, 1, 1, 2]


def test_sampled_paths_are_merged_and_written_in_the_prm_layout() -> None:
    item = EvalItem("t", "p2", "q?", None, None, "5", "integer")
    out = asyncio.run(_labeller(ScriptedClient()).label(item, b"png"))
    assert out.paths == [[RIGHT]] and out.labels == [["+"]]  # two identical samples, one path
    record = record_of(out, 0, " \n\n\n\n\n")
    assert record["question"] == "q?" and record["process"] == RIGHT + " \n\n\n\n\n" and record["label"] == ["+"]


class FailingForOneProblem(ScriptedClient):
    async def call(self, job: PolicyJob, timeout_s: float) -> PolicyResult:
        if job.request_id == "label-bad":
            error = JobError(code="preset_mismatch", message="served preset differs", recoverable=False)
            return PolicyResult(job_id=job.job_id, request_id=job.request_id, error=error)
        return await super().call(job, timeout_s)


def test_a_failed_problem_is_recorded_and_the_others_are_labelled(tmp_path: Path) -> None:
    problems = [{"id": pid, "question": "q?", "answer": "5", "family": "f", "steps": []} for pid in ("ok", "bad")]
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    cfg = ClusterLabelConfig(data=str(tmp_path), out=str(tmp_path / "out"), problems=2, samples=2, rollouts=2)
    settings = Settings(prompt_preset="tiny")
    summary = asyncio.run(label_with_cluster(cfg, settings, client=FailingForOneProblem(), progress=False))  # type: ignore[arg-type]
    assert summary["paths"] == 1 and summary["failed_problems"] == 1
    [failed] = [json.loads(x) for x in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert failed["id"] == "bad" and "preset_mismatch" in failed["reason"]
