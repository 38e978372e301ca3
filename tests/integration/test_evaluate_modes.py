"""``research.training.evaluate`` measures what only it measures (reading, direct, CoT, PRM AUROC) and runs beam and
QuickThink through the service's strategies; the modes it once ran with a sampler of its own are refused with the
command that measures them now."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR
from research.data.records import read_jsonl, write_dataset
from research.training import evaluate

pytestmark = pytest.mark.integration


def test_rows_and_the_sampling_they_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, 3, 20261206, 1, progress=False)
    out = tmp_path / "results.json"
    argv = ["--policy", str(DEFAULT_POLICY_DIR), "--prm", str(DEFAULT_PRM_DIR), "--data", str(data), "--n", "3",
            "--modes", "auroc,direct,beam,service_quick", "--temperature", "1.2", "--top-k", "20", "--seed", "5",
            "--threads", "1", "--concurrency", "2", "--json", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0
    result = json.loads(out.read_text())
    assert (result["temperature"], result["top_k"], result["top_p"], result["seed"]) == (1.2, 20, None, 5)
    assert {"prm_auroc", "direct", "beam_w2_c3", "service_quick"} <= result.keys()
    assert not {"reading_accuracy", "cot_greedy", "quick", "best_of_n"} & result.keys()
    # the beam row is the service's beam at those seeds: the same solves give the same paths
    problems = read_jsonl(data / "problems.jsonl")
    args = argparse.Namespace(policy=str(DEFAULT_POLICY_DIR), prm=str(DEFAULT_PRM_DIR), temperature=1.2, top_p=None,
                              top_k=20, seed=5, threads=1, concurrency=2)  # fmt: skip
    solved = evaluate.service_run(args, data, problems, "beam")
    assert result["beam_paths"] == [[step.text for step in r.steps] for r in solved]


@pytest.mark.parametrize("mode", ["quick", "bon", "greedy", "adaptive"])
def test_removed_modes_point_to_the_service_runs(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        evaluate.main(["--data", "unused", "--modes", f"auroc,{mode}"])
    message = capsys.readouterr().err
    assert f"{mode}: {evaluate.REMOVED_MODES[mode]}" in message
    assert ("atomthink eval" in message) == (mode in ("bon", "adaptive"))
