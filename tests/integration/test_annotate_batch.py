"""``atomthink annotate`` as a batch tool against a real local HTTP server that misbehaves on purpose
(``tests.integration.scripted_llm``: garbage bodies, prose instead of JSON, empty replies, 429s, 500s, timeouts).

Every problem must end as exactly one record (accepted, mismatch) or one recorded rejection with its reason, the
command must exit 0 with a summary, and a run killed with SIGKILL and resumed must write exactly the records of an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.servers import REPO_ROOT, ServerProcess
from research.data.official import AnnotationStep, SftRecord, TaggedPrmRecord
from tests.integration.scripted_llm import BEHAVIOURS, behaviour

pytestmark = pytest.mark.integration

EXPECTED = {
    "garbage": ("rejected", "unusable:non_json_body"),
    "prose": ("rejected", "unusable:not_json"),
    "empty": ("rejected", "unusable:empty_reply"),
    "rate": ("accepted", None),
    "down": ("rejected", "http_500"),
    "flaky": ("accepted", None),
    "slow": ("accepted", None),
    "wrong": ("mismatch", None),
    "fenced": ("accepted", None),
    "good": ("accepted", None),
}
FAST = ["--timeout", "1", "--max-retries", "3", "--backoff", "0.05", "--quiet"]


def _server(*extra: str) -> ServerProcess:
    return ServerProcess(
        list(extra), program=[sys.executable, "-m", "tests.integration.scripted_llm"], ready_path="/health"
    )


@pytest.fixture(scope="module")
def llm() -> Iterator[ServerProcess]:
    with _server() as server:
        yield server


def write_problems(path: Path, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        a, b = 3 + i % 17, 5 + (i * 7) % 23
        rows.append({"id": f"p{i:03d}", "question": f"What is {a} + {b}?", "answer": str(a + b)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def annotate(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atomthink_serve.cli", "annotate", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]


def test_every_problem_ends_as_a_record_or_a_recorded_rejection(llm: ServerProcess, tmp_path: Path) -> None:
    rows = write_problems(tmp_path / "problems.jsonl", 60)
    kinds = {r["id"]: behaviour(r["question"]) for r in rows}
    assert set(kinds.values()) == set(BEHAVIOURS), "the fixture must exercise every behaviour"
    out = tmp_path / "out"
    done = annotate(str(tmp_path / "problems.jsonl"), "--out", str(out), "--base-url", llm.url + "/v1",
                    "--model", "scripted", "--concurrency", "8", *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    records = log_of(out)
    assert sorted(r["problem_id"] for r in records) == sorted(kinds), "one record per problem, none lost or repeated"
    for r in records:
        assert (r["status"], r["reason"]) == EXPECTED[kinds[r["problem_id"]]], r
    by_kind = Counter(kinds.values())
    assert summary["problems"] == 60
    assert summary["accepted"] + summary["mismatch"] + summary["rejected"] == 60
    assert summary["rejected"] == sum(by_kind[k] for k in ("garbage", "prose", "empty", "down"))
    assert summary["mismatch"] == by_kind["wrong"]
    assert summary["rejections_by_reason"]["http_500"] == by_kind["down"]
    # every unusable 200 reply is on record: 1 + 2 resamples per garbage/prose/empty problem
    unusable = summary["unusable_replies_by_reason"]
    assert unusable["non_json_body"] == 3 * by_kind["garbage"]
    assert unusable["not_json"] == 3 * by_kind["prose"]
    assert unusable["empty_reply"] == 3 * by_kind["empty"]
    assert summary["http_by_status"]["429"] >= 2 * by_kind["rate"]
    assert summary["http_by_status"]["500"] >= 4 * by_kind["down"] + by_kind["flaky"]
    assert summary["http_by_status"].get("timeout", 0) >= by_kind["slow"]
    assert summary["structured_output"] == "auto"
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    # the derived files: official layouts, mismatches kept apart
    sft = [json.loads(x) for x in (out / "sft.jsonl").read_text().splitlines()]
    prm = [json.loads(x) for x in (out / "prm.jsonl").read_text().splitlines()]
    accepted = [r for r in records if r["status"] == "accepted"]
    assert len(prm) == len(accepted) and len(sft) == 3 * len(accepted)
    for rec in sft:
        SftRecord.model_validate(rec)
    for rec in prm:
        TaggedPrmRecord.model_validate(rec)
    for r in accepted:
        for step in r["steps"]:
            AnnotationStep.model_validate(step)
        assert r["steps"][-1]["next_action"] == "final_answer"
    mismatch = [json.loads(x) for x in (out / "mismatch.jsonl").read_text().splitlines()]
    assert sorted(m["problem_id"] for m in mismatch) == sorted(p for p, k in kinds.items() if k == "wrong")
    report = json.loads((out / "report.json").read_text())
    expected = {"accepted": len(accepted), "mismatch": by_kind["wrong"], "rejected": summary["rejected"]}
    assert report["status"] == expected
    assert report["steps_per_path"]["median"] == 3


def test_atomization_mode_and_an_endpoint_without_structured_output(tmp_path: Path) -> None:
    rows = write_problems(tmp_path / "problems.jsonl", 20)
    for r in rows:
        a, b = r["question"].removeprefix("What is ").removesuffix("?").split(" + ")
        r["solution"] = f"{a} + {b} = {r['answer']}"
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with _server("--no-schema") as server:
        done = annotate(str(tmp_path / "problems.jsonl"), "--out", str(tmp_path / "out"), "--mode", "atomize",
                        "--base-url", server.url + "/v1", "--model", "scripted", *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["structured_output"] == "off", "a 400 to response_format falls back to the tolerant parser"
    kinds = Counter(behaviour(r["question"]) for r in rows)
    assert summary["accepted"] == sum(kinds[k] for k in ("rate", "flaky", "slow", "fenced", "good"))
    for r in log_of(tmp_path / "out"):
        if r["status"] == "accepted":
            assert [s["next_action"] for s in r["steps"]] == ["continue", "continue", "final_answer"]


def test_sigkill_then_resume_gives_exactly_the_records_of_an_uninterrupted_run(
    llm: ServerProcess, tmp_path: Path
) -> None:
    problems = tmp_path / "problems.jsonl"
    write_problems(problems, 80)
    common = ["--base-url", llm.url + "/v1", "--model", "scripted", "--concurrency", "4", "--rps", "40", *FAST]
    whole = annotate(str(problems), "--out", str(tmp_path / "whole"), *common)
    assert whole.returncode == 0, whole.stderr

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "atomthink_serve.cli", "annotate", str(problems), "--out", str(killed), *common],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = killed / "annotations.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if log.is_file() and log.read_bytes().count(b"\n") >= 25:
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    written = log.read_bytes().count(b"\n")
    assert 25 <= written < 80, f"killed after {written} records: not mid-way"

    resumed = annotate(str(problems), "--out", str(killed), *common)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] == written and summary["annotated_this_run"] == 80 - written

    def by_id(out: Path) -> dict[str, dict[str, Any]]:
        records = log_of(out)
        assert len({r["id"] for r in records}) == len(records) == 80
        return {r["id"]: r for r in records}

    assert by_id(killed) == by_id(tmp_path / "whole")
    for name in ("sft.jsonl", "prm.jsonl", "mismatch.jsonl", "rejected.jsonl", "report.json"):
        assert (killed / name).read_text() == (tmp_path / "whole" / name).read_text(), name


def test_nothing_is_sent_without_an_endpoint(tmp_path: Path) -> None:
    write_problems(tmp_path / "problems.jsonl", 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMTHINK_ANNOTATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "atomthink_serve.cli", "annotate", str(tmp_path / "problems.jsonl"), "--out",
         str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no endpoint" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_resume_with_other_settings_is_refused(llm: ServerProcess, tmp_path: Path) -> None:
    write_problems(tmp_path / "problems.jsonl", 3)
    args = [str(tmp_path / "problems.jsonl"), "--out", str(tmp_path / "out"), "--base-url", llm.url + "/v1",
            "--model", "scripted", *FAST]  # fmt: skip
    assert annotate(*args).returncode == 0
    again = annotate(*args, "--max-steps", "5")
    assert again.returncode == 2 and "other settings" in again.stderr
