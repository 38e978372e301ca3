"""The evaluation's beam and QuickThink runs are the service's: for the same seeds and sampling,
``research.training.evaluate`` (embedded, in process) and ``POST /solve`` on a real gateway give the same paths."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import httpx
import pytest

from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR
from harness.servers import ServerProcess
from research.data.records import read_jsonl, write_dataset
from research.training import evaluate

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["quick", "beam"])
def test_evaluation_runs_equal_the_served_ones(tmp_path: Path, mode: str) -> None:
    data = tmp_path / "data"
    write_dataset(data, 2, 20261206, 1, progress=False)
    problems = read_jsonl(data / "problems.jsonl")
    args = argparse.Namespace(policy=str(DEFAULT_POLICY_DIR), prm=str(DEFAULT_PRM_DIR), temperature=1.2, top_p=0.8,
                              top_k=20, seed=7, threads=1, concurrency=2)  # fmt: skip
    ours = evaluate.service_run(args, data, problems, mode)  # type: ignore[arg-type]
    env = {"ATOMTHINK_POLICY_MODEL": str(DEFAULT_POLICY_DIR), "ATOMTHINK_PRM_MODEL": str(DEFAULT_PRM_DIR),
           "ATOMTHINK_QUEUE": "memory", "ATOMTHINK_TORCH_THREADS": "1"}  # fmt: skip
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as gateway:
        for i, (problem, mine) in enumerate(zip(problems, ours, strict=True)):
            params = evaluate.service_params(problem, mode, args, args.seed + i)  # type: ignore[arg-type]
            body = params.model_dump(mode="json", exclude_none=True)
            body["image"] = base64.b64encode((data / problem["image"]).read_bytes()).decode()
            served = httpx.post(f"{gateway.url}/solve", json=body, timeout=300)
            assert served.status_code == 200, served.text
            theirs = served.json()
            assert [s.text for s in mine.steps] == [s["text"] for s in theirs["steps"]]
            assert mine.answer == theirs["answer"] and mine.strategy == theirs["strategy"]
            assert mine.stats.generated_tokens == theirs["stats"]["generated_tokens"]
