"""``atomthink annotate`` through this service's own ``/v1`` (``atomthink serve`` with the shipped tiny multimodal
models, images as data URLs): every problem ends as a record or a recorded rejection, and the records of solved
problems are official AMATH-SFT / AMATH-PRM records."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers import REPO_ROOT, ServerProcess
from research.data.official import SftRecord, TaggedPrmRecord

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shipped_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    env = {"ATOMTHINK_QUEUE": "memory", "ATOMTHINK_TORCH_THREADS": "1"}
    with ServerProcess(["serve"], env, log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def problems(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mm")
    done = subprocess.run(
        [sys.executable, "-m", "atomthink_serve.cli", "data", "--out", str(out), "--n", "4", "--seed", "9", "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out / "problems.jsonl"


def annotate(problems: Path, out: Path, url: str, *extra: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [sys.executable, "-m", "atomthink_serve.cli", "annotate", str(problems), "--out", str(out),
         "--base-url", url + "/v1", "--model", "atomthink", "--timeout", "240", "--quiet", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_solve_mode_through_the_service_makes_official_records(
    shipped_service: ServerProcess, problems: Path, tmp_path: Path
) -> None:
    summary = annotate(problems, tmp_path / "out", shipped_service.url, "--mode", "solve",
                       "--extra-body", '{"reasoning_effort": "low"}', "--temperature", "0.2")  # fmt: skip
    assert summary["problems"] == 4
    assert summary["accepted"] + summary["mismatch"] + summary["rejected"] == 4
    assert summary["accepted"] >= 1, summary
    records = [json.loads(x) for x in (tmp_path / "out" / "annotations.jsonl").read_text().splitlines()]
    assert sorted(r["problem_id"] for r in records) == [f"s9-00000{i}" for i in range(4)]
    for r in records:
        if r["status"] != "rejected":
            assert r["image"].startswith("images/") and r["steps"][-1]["next_action"] == "final_answer"
    for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines():
        record = SftRecord.model_validate_json(line)
        assert record.image is not None and record.conversations[0].value.startswith("<image>\n")
    for line in (tmp_path / "out" / "prm.jsonl").read_text().splitlines():
        TaggedPrmRecord.model_validate_json(line)


def test_dynamic_json_prompts_through_the_service_end_as_recorded_rejections(
    shipped_service: ServerProcess, problems: Path, tmp_path: Path
) -> None:
    """The tiny policy only knows its own step format: asked for JSON nodes it answers with a value, and each
    problem ends as a rejection with its reason (measured, not hidden)."""
    summary = annotate(problems, tmp_path / "out", shipped_service.url, "--max-resamples", "0",
                       "--extra-body", '{"reasoning_effort": "none"}')  # fmt: skip
    assert summary["rejected"] + summary["accepted"] + summary["mismatch"] == 4
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert all(r["reason"] and r["unusable"] for r in rejected)
    assert sum(summary["unusable_replies_by_reason"].values()) >= summary["rejected"]
