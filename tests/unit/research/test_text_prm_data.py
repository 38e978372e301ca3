"""The text PRM's data: text-dominant engine records, and rollout labels of sampled paths on a scripted engine (an
algorithm test: which prefixes are rescued)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from atomthink.protocol import Candidate
from research.data.engine import make_problem
from research.data.records import split_process
from research.training.text_prm import TextRolloutConfig, _label, right_answer, text_engine_records


def test_engine_records_state_the_values_and_label_the_corruption() -> None:
    p = make_problem(2, 5)
    records = text_engine_records(p, random.Random(0), negatives=3)
    assert records[0]["label"] == ["+"] * len(p.steps) and records[0]["corruption"] is None
    assert split_process(records[0]["process"]) == [s.text for s in p.steps]
    assert len(records) == 4
    for record in records:
        assert all(str(v) in record["question"] for v in p.values.values()), record["question"]
    for record in records[1:]:
        labels = record["label"]
        assert "-" in labels and labels == sorted(labels, key=lambda lab: lab == "-"), labels  # + ... then - ...
        assert split_process(record["process"])[-1] != p.steps[-1].text


class ScriptedEngine:
    """``VllmPolicy.agenerate`` of a policy that goes wrong at the first step when sampled hot, and otherwise writes
    the reference step, unless the history already holds a wrong step (then it concludes wrongly)."""

    def __init__(self, p: Any) -> None:
        self.reference = [s.text for s in p.steps]
        self.calls = 0

    async def agenerate(self, request: Any) -> list[Candidate]:
        self.calls += 1
        steps = list(request.steps)
        if request.sampling.temperature > 1.5 and not steps:
            text = "Bar Z is 9."  # a hot sample's wrong first step
        elif any(s not in self.reference for s in steps):
            text = "To sum up, the final answer is: 99"
        else:
            text = self.reference[len(steps)]
        return [Candidate(text=text, num_tokens=len(text), finish_reason="delimiter")]


def test_rollout_labels_mark_the_first_unrescued_step(tmp_path: Path) -> None:
    p = make_problem(3, 0)
    cfg = TextRolloutConfig(policy="scripted", out=str(tmp_path), problems=1, samples=2, rollouts=2,
                            temperature=2.0, rollout_temperature=1.0)  # fmt: skip
    summary = asyncio.run(_label(cfg, ScriptedEngine(p), progress=False))
    [record] = [json.loads(line) for line in (tmp_path / "prm.jsonl").read_text().splitlines()]  # two equal samples
    assert split_process(record["process"]) == ["Bar Z is 9.", "To sum up, the final answer is: 99"]
    assert record["label"] == ["-", "-"]  # the prefix "Bar Z is 9." is completed twice and never rescued
    assert summary["sampled_accuracy"] == 0.0 and summary["rollouts"] == 2
    assert right_answer(p, [s.text for s in p.steps]) and not right_answer(p, ["Bar Z is 9."])


def test_rollouts_rescue_a_right_prefix(tmp_path: Path) -> None:
    """Sampled cool, the scripted policy writes the reference path: every step is ``+`` and nothing is rolled out."""
    p = make_problem(3, 0)
    cfg = TextRolloutConfig(policy="scripted", out=str(tmp_path), problems=1, samples=1, temperature=1.0)
    summary = asyncio.run(_label(cfg, ScriptedEngine(p), progress=False))
    [record] = [json.loads(line) for line in (tmp_path / "prm.jsonl").read_text().splitlines()]
    assert record["label"] == ["+"] * len(p.steps) and summary["rollouts"] == 0
