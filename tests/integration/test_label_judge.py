"""The LLM step judge against a real OpenAI-compatible server: this service's own ``/v1`` over the tiny models.

The tiny policy is no judge, so its replies are mostly unusable: the point is the path of every record: every path
ends labelled or rejected with its reason, none dropped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from harness.servers import ServerProcess
from research.training.step_judge import JudgeLabelConfig, StepJudge, judge_labels
from tests.conftest import model_env

pytestmark = pytest.mark.integration

TAG = " \n\n\n\n\n"


def test_every_path_ends_labelled_or_rejected(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "paths.jsonl"
    records = [
        {"id": f"p{i}", "question": f"What is {i} + 2?", "answer": str(i + 2),
         "process": f"{i} + 2 = {i + 3}{TAG}The final answer is {i + 3}{TAG}", "label": ["+", "+"]}
        for i in range(3)
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = model_env(tiny_models, ATOMTHINK_SERVED_MODEL_NAME="judge")
    with ServerProcess(["serve"], env, log_path=tmp_path / "serve.log") as server:

        async def go() -> dict[str, object]:
            async with StepJudge(f"{server.url}/v1", "judge", timeout_s=120) as judge:
                return await judge_labels(JudgeLabelConfig(str(data), str(tmp_path / "out")), judge, progress=False)

        summary = asyncio.run(go())
    labelled = [json.loads(x) for x in (tmp_path / "out" / "prm.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert summary["records"] == 3 and len(labelled) + len(rejected) == 3
    assert all(r["reason"] for r in rejected)
    assert sum(summary["rejected"].values()) == len(rejected)  # type: ignore[attr-defined]
    for record in labelled:
        assert record["source"] == "judge" and len(record["label"]) == 2
