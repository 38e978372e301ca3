"""``research.training.evaluate --paths``: a second run reuses the saved samples and measures the same figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR
from research.data.records import write_dataset
from research.training.evaluate import main as evaluate_main

pytestmark = pytest.mark.integration


def _run(
    tmp_path: Path, data: Path, paths: Path, name: str, temperature: str = "1.6", policy: Path = DEFAULT_POLICY_DIR
) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    argv = ["--policy", str(policy), "--prm", str(DEFAULT_PRM_DIR), "--data", str(data), "--n", "4",
            "--modes", "quick,bon,beam,adaptive", "--best-of", "2", "--temperature", temperature, "--threads", "1",
            "--paths", str(paths), "--json", str(out)]  # fmt: skip
    assert evaluate_main(argv) == 0
    result: dict[str, object] = json.loads(out.read_text())
    return result


def test_saved_paths_are_reused_with_the_rng_where_sampling_left_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, 4, 20261125, 1, progress=False)
    paths = tmp_path / "paths.json"
    first = _run(tmp_path, data, paths, "first")
    saved = json.loads(paths.read_text())
    assert saved["temperature"] == 1.6 and len(saved["paths"]) == 4 and all(len(ps) == 2 for ps in saved["paths"])
    torch.manual_seed(0)
    assert saved["rng_state"] != torch.get_rng_state().tolist()  # the state after sampling, not the seed's
    second = _run(tmp_path, data, paths, "second")
    assert "quick_seconds_per_problem" in first and "quick_seconds_per_problem" not in second  # nothing resampled
    for key in ("quick", "pass_at_n", "best_of_n", "beam_w2_c3", "beam_paths", "adaptive"):
        assert second[key] == first[key], key
    assert all(len(tokens) == len(path) for ps, ts in zip(saved["paths"], saved["tokens"], strict=True)
               for path, tokens in zip(ps, ts, strict=True))  # fmt: skip
    # the service's strategies replayed over the saved paths give the evaluator's own fixed-N figures
    rows = {row["name"]: row for row in first["adaptive"]}  # type: ignore[attr-defined]
    sweep = first["best_of_n"]
    for n in ("1", "2"):
        assert rows[f"majority, N = {n}"]["accuracy"] == sweep[n]["majority"]  # type: ignore[index]
        assert rows[f"weighted majority, N = {n}"]["accuracy"] == sweep[n]["weighted_vote_min"]  # type: ignore[index]
        assert rows[f"best-of-N min, N = {n}"]["accuracy"] == sweep[n]["best_of_n_min"]  # type: ignore[index]
    assert rows["majority, N = 2"]["mean_tokens"] > rows["majority, N = 1"]["mean_tokens"] > 0


def test_paths_sampled_with_other_settings_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, 4, 20261125, 1, progress=False)
    paths = tmp_path / "paths.json"
    _run(tmp_path, data, paths, "first")
    with pytest.raises(SystemExit, match="temperature"):
        _run(tmp_path, data, paths, "hotter", temperature="1.8")


def test_paths_of_a_policy_retrained_into_the_same_folder_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_dataset(data, 4, 20261125, 1, progress=False)
    policy = tmp_path / "policy"
    shutil.copytree(DEFAULT_POLICY_DIR, policy)
    paths = tmp_path / "paths.json"
    _run(tmp_path, data, paths, "first", policy=policy)
    weights = load_file(policy / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3  # a "retrained" checkpoint at the same path
    save_file(weights, policy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SystemExit, match="policy weights"):
        _run(tmp_path, data, paths, "retrained", policy=policy)
