"""``atomthink eval`` through the real service (embedded runtime or a gateway process) with tiny random models."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from atomthink.settings import Settings
from atomthink_serve.embedded import build_runtime
from harness.servers import ServerProcess
from research.eval import cli
from research.eval.datasets import load_items
from research.eval.runner import RunOptions, RuntimeSolveClient, read_results, run_items
from research.eval.suites import RunConfig
from service.schemas import SolveParams, SolveResponse
from tests.conftest import model_env

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eval"
FAST: dict[str, Any] = {"max_step_tokens": 12, "max_answer_tokens": 24, "torch_threads": 1, "quick_max_retries": 2}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class CountingClient:
    """The real embedded service, with a count of the solves that reach it."""

    def __init__(self, inner: RuntimeSolveClient) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def solve(self, params: SolveParams, image: bytes | None) -> SolveResponse:
        self.calls.append(params.question)
        return await self.inner.solve(params, image)


@pytest.fixture
async def counting_client(tiny_models: dict[str, Path]) -> AsyncIterator[CountingClient]:
    settings = Settings(policy_model=str(tiny_models["policy"]), prm_model=str(tiny_models["prm"]), **FAST)
    async with build_runtime(settings) as runtime:
        yield CountingClient(RuntimeSolveClient(runtime))


async def test_a_resumed_run_does_not_redo_finished_items(counting_client: CountingClient, tmp_path: Path) -> None:
    items = load_items(FIXTURES / "synthetic", limit=4)
    configs = [RunConfig.make("direct"), RunConfig.make("slow", "best_of_n", "min", 2)]
    results = tmp_path / "results.jsonl"
    options = RunOptions(seed=3, max_steps=2, concurrency=2, progress=False)

    first = await run_items(counting_client, configs, items[:2], results, options)  # an interrupted run
    assert len(first) == 4 and len(counting_client.calls) == 4
    before = results.read_text()
    with results.open("a") as handle:  # a transient failure and a torn line, as a killed run leaves them
        failed = {**first[0], "id": items[2].id, "run": "direct", "error": "job_timeout", "error_transient": True}
        handle.write(json.dumps(failed) + "\n" + '{"run": "direct", "data')

    counting_client.calls.clear()
    records = await run_items(counting_client, configs, items, results, options)
    assert len(counting_client.calls) == 4  # 2 configs x 2 new items, the failed one included; nothing redone
    assert sorted(counting_client.calls) == sorted([i.question for i in items[2:]] * 2)
    assert results.read_text().startswith(before)  # finished lines are kept as they were
    assert len(records) == 8 and all(r["error"] is None for r in records)

    counting_client.calls.clear()
    again = await run_items(counting_client, configs, items, results, options)
    assert counting_client.calls == [] and len(again) == 8


def test_paper_suite_end_to_end_writes_every_artifact(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in FAST.items():
        monkeypatch.setenv(f"ATOMTHINK_{name.upper()}", str(value))
    out = tmp_path / "paper"
    argv = [
        "--suite", "paper", "--candidates", "1,2", "--limit", "1", "--max-steps", "2", "--seed", "5",
        "--data", str(FIXTURES / "synthetic"),
        "--data", f"mathvista={FIXTURES / 'mathvista' / 'testmini.json'}",
        "--data", str(FIXTURES / "mathverse"),
        "--policy-model", str(tiny_models["policy"]), "--prm-model", str(tiny_models["prm"]),
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    assert cli.main(argv) == 0

    printed = capsys.readouterr().out
    assert "accuracy %" in printed and "mean latency ms" in printed and "mean tokens" in printed
    summary = (out / "summary.md").read_text()
    for section in ("## Modes", "## Strategies", "## Test-time scaling", "## Atomic-step capabilities"):
        assert section in summary
    for column in ("Synthetic Total", "MathVista Total", "MathVerse Total", "QuickThink", "Best-of-N (prod)"):
        assert column in summary
    for png in ("scaling_accuracy.png", "scaling_latency.png", "capabilities.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
    runs = json.loads((out / "summary.json").read_text())["runs"]
    records = read_results(out / "results.jsonl")
    assert len(records) == len(runs) * 3  # every run over one item of each data file
    for record in records:
        assert record["error"] is None
        assert {"answer", "correct", "steps", "generated_tokens", "latency_ms", "prediction"} <= record.keys()
        assert record["steps"] and all("capability" in s and "score" in s for s in record["steps"])
        if record["mode"] == "slow" and not record["run"].startswith("slow-majority-"):
            assert all(isinstance(s["score"], float) for s in record["steps"])
        elif record["mode"] == "slow":  # a plain vote calls no PRM
            assert all(s["score"] is None for s in record["steps"])


def test_against_a_running_gateway(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    env = model_env(tiny_models, ATOMTHINK_QUEUE="memory")
    with ServerProcess(["serve"], env, log_path=tmp_path / "gateway.log") as gateway:
        argv = [
            "--url", gateway.url, "--mode", "quick,slow", "--strategy", "majority", "--candidates", "2",
            "--limit", "2", "--max-steps", "2", "--data", str(FIXTURES / "mathverse"),
            "--out", str(tmp_path / "http"), "--no-progress",
        ]  # fmt: skip
        assert cli.main(argv) == 0
        assert cli.main(argv) == 0  # a second run finds everything done
    records = read_results(tmp_path / "http" / "results.jsonl")
    assert len(records) == 4 and all(r["error"] is None for r in records)
    assert len((tmp_path / "http" / "results.jsonl").read_text().splitlines()) == 4
    assert {r["run"] for r in records} == {"quick", "slow-majority-min-n2"}
