"""A small round of the peer benchmark (``benchmarks/peers.py``): its_hub's beam search and ours on the same vLLM
CPU engines, one problem each, in process and through Redis. Fails when the peer's import, its adapters or our side
break; measures nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.servers import REPO_ROOT, VLLM_PYTHON

pytestmark = pytest.mark.integration


def test_peer_benchmark_runs_both_sides_on_one_engine(tmp_path: Path) -> None:
    if not VLLM_PYTHON.exists():
        reason = f"no vLLM engine at {VLLM_PYTHON}: run scripts/install-vllm.sh"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI installs it and must run this test)")
        pytest.skip(reason)
    out = tmp_path / "peers.json"
    command = [str(VLLM_PYTHON), "benchmarks/peers.py", "--strategies", "beam,self_consistency", "--concurrency", "1",
               "--blocks", "1", "--min-problems", "1", "--waves", "1", "--paths", "inprocess,redis", "--max-steps", "3",
               "--path-sampling", "cot", "--json", str(out)]  # fmt: skip
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "its_hub 1.2.0" in run.stdout
    assert "PRM atomthink-tiny-text-prm" in run.stdout, "the text policy's runs default to its own PRM"
    result = json.loads(out.read_text())
    sides = {(c["side"], c["strategy"]) for c in result["cells"]}
    assert sides == {(side, strategy) for side in ("ours (in process)", "its_hub 1.2.0", "ours (Redis)",
                     "its_hub 1.2.0 (beside Redis)") for strategy in ("beam", "self_consistency")}, sides  # fmt: skip
    for cell in result["cells"]:
        assert len(cell["problems"]) == 1 and cell["policy_tokens"] > 0 and cell["wall_s"] > 0, cell
        if cell["strategy"] == "beam":
            assert cell["prm_prompt_tokens"] > 0, f"the PRM scored nothing: {cell}"
    assert result["floors"] and all(f["policy_requests"] > 0 for f in result["floors"])
    assert {f["side"] for f in result["floors"]} == {"ours", "its_hub"}, "both sides' requests are replayed"
    assert result["knobs"]["path_sampling"] == "cot"
    lines = result["summary"]
    assert any(line.startswith("- roofline, beam, c=1: its_hub reaches") for line in lines), lines
    assert any(line.startswith("- beam, c=1, ours (Redis):") for line in lines), lines
