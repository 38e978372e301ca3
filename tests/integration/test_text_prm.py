"""The text PRM (``models/atomthink-tiny-text-prm``) through the serving PRM backend ranks the text policy's own
steps: right above wrong on paths sampled on held-out problems.

The fixture holds 67 distinct paths of ``atomthink-tiny-text-policy`` on held-out text-dominant problems 1000-1039
(seed 20261125, never trained on; the headroom benchmark uses 0-499) sampled at T 1.6, top_p 1.0, top_k 0 and labelled
by Math-Shepherd rollouts (``tests/fixtures/text_prm/meta.json`` holds the command's settings)::

    .venv-vllm/bin/python -m research.training.cli text-rollout-labels --policy models/atomthink-tiny-text-policy \\
        --out runs/heldout-fixture --seed 20261125 --offset 1000 --problems 40 --samples 2 --rollouts 3 \\
        --temperature 1.6 --top-p 1.0 --top-k 0 --rollout-temperature 1.0

On it the text PRM's step AUROC is 0.92; the multimodal policy's PRM (``atomthink-tiny-prm``) scores 0.80 and fails.
"""

from __future__ import annotations

import pytest

from atomthink.settings import REPO_ROOT
from research.data.records import read_jsonl, split_process
from research.training.evaluate import auroc

pytestmark = pytest.mark.integration

TEXT_PRM_DIR = REPO_ROOT / "models" / "atomthink-tiny-text-prm"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "text_prm" / "heldout_policy_paths.jsonl"


def step_auroc(prm_dir: str) -> float:
    from workers.backends.base import ScoreRequest
    from workers.backends.hf_prm import TransformersPrm

    prm = TransformersPrm(prm_dir)
    scores: list[float] = []
    right: list[int] = []
    for record in read_jsonl(FIXTURE):
        [[path_scores]] = prm.score([ScoreRequest(record["question"], [split_process(record["process"])])])
        scores += path_scores
        right += [int(label == "+") for label in record["label"]]
    assert len(scores) == 375 and right.count(0) == 118  # the fixture as written
    return auroc(scores, right)


def test_text_prm_ranks_the_text_policys_right_steps_above_its_wrong_ones() -> None:
    value = step_auroc(str(TEXT_PRM_DIR))
    print(f"text PRM: step AUROC {value:.3f} on the text policy's held-out sampled steps")
    assert value >= 0.88, value
