"""Rollout labels through the real cluster path: a Redis queue and an ``atomthink worker policy`` process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from atomthink.settings import Settings
from harness.servers import REPO_ROOT, WorkerProcess
from research.data.records import write_dataset
from research.training.cluster_labels import ClusterLabelConfig, label_with_cluster
from research.training.step_judge import split_steps
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.integration

POLICY = REPO_ROOT / "models" / "atomthink-tiny-policy"


def test_labels_come_from_policy_workers_over_redis(redis_prefix: str, tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", 3, 11, 0, progress=False)
    env = {"ATOMTHINK_QUEUE": "redis", "ATOMTHINK_REDIS_URL": TEST_REDIS_URL, "ATOMTHINK_KEY_PREFIX": redis_prefix,
           "ATOMTHINK_POLICY_MODEL": str(POLICY), "ATOMTHINK_TORCH_THREADS": "1"}  # fmt: skip
    settings = Settings(queue="redis", redis_url=TEST_REDIS_URL, key_prefix=redis_prefix, policy_model=str(POLICY),
                        job_timeout_s=120)  # fmt: skip
    cfg = ClusterLabelConfig(data=str(tmp_path / "data"), out=str(tmp_path / "out"), problems=3, samples=3,
                             rollouts=2, temperature=1.3, max_depth=10)  # fmt: skip
    with WorkerProcess("policy", env, log_path=tmp_path / "policy.log") as worker:
        summary = asyncio.run(label_with_cluster(cfg, settings, progress=False))
        jobs_done = worker.metric("atomthink_worker_jobs_total")
    records = [json.loads(line) for line in (tmp_path / "out" / "prm.jsonl").read_text().splitlines()]
    assert summary["problems"] == 3 and summary["paths"] == len(records) >= 3
    assert summary["policy_jobs"] > 0 and jobs_done >= summary["policy_jobs"]  # every step was a worker's job
    for record in records:
        steps = split_steps(record["process"], " \n\n\n\n\n")
        labels = record["label"]
        assert len(steps) == len(labels) >= 1 and set(labels) <= {"+", "-"}
        assert "".join(labels) == "+" * labels.count("+") + "-" * labels.count("-")  # first error, then all '-'
    assert summary["negative_steps"] == sum(r["label"].count("-") for r in records)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["problems_per_s"] > 0 and meta["prompt_preset"] == "tiny"
