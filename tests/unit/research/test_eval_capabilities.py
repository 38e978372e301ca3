"""Capability assignment (tags, rules), per-capability figures, resume bookkeeping and the optional judge."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from atomthink.settings import Settings
from research.eval.capabilities import align_to_tags, capability_stats, classify_step
from research.eval.datasets import load_items
from research.eval.judge import LlmJudge
from research.eval.runner import finished_keys, read_results
from research.eval.suites import RunConfig, suite_plan

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "eval"


def test_rules_agree_with_the_synthetic_tags() -> None:
    for item in load_items(FIXTURES / "synthetic"):
        assert [classify_step(s.text) for s in item.steps] == [s.capability for s in item.steps]


@pytest.mark.parametrize(
    ("text", "capability"),
    [
        ("From the chart, the bar for 2019 reaches 45.", "image_recognition"),
        ("Let x be the length of AB.", "variable_definition"),
        ("180 - 80 - 60 = 40", "calculation"),
        ("The sum of angles in a triangle is 180°.", "rule_application"),
        ("Therefore, the answer is D.", "conclusion"),
    ],
)
def test_rule_classifier_on_free_text(text: str, capability: str) -> None:
    assert classify_step(text) == capability


def test_produced_steps_take_the_tag_of_the_alike_reference_step() -> None:
    item = next(i for i in load_items(FIXTURES / "synthetic") if i.split == "shapes")
    produced = ["Width w = 9.", "Area = w × h.", "9 × 2 = 18", "To sum up, the final answer is: A"]
    assert align_to_tags(produced, item.steps) == [
        ("image_recognition", "tag"),
        ("rule_application", "tag"),
        ("calculation", "tag"),
        ("conclusion", "tag"),
    ]
    assert align_to_tags(["zzzz qqqq"], item.steps)[0][1] == "rule"


def test_capability_stats() -> None:
    records = [
        {"correct": True, "steps": [{"capability": "calculation", "score": 0.8}, {"capability": "conclusion"}]},
        {"correct": False, "steps": [{"capability": "calculation", "score": 0.4}]},
    ]
    stats = {s.capability: s for s in capability_stats(records)}
    assert stats["calculation"].steps == 2 and stats["calculation"].share == pytest.approx(2 / 3)
    assert stats["calculation"].mean_prm == pytest.approx(0.6)
    assert stats["calculation"].outcome_supervised == pytest.approx(0.5)
    assert stats["conclusion"].outcome_supervised == 1.0 and stats["conclusion"].mean_prm is None
    assert stats["image_recognition"].outcome_supervised is None


def test_resume_bookkeeping(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    lines = [
        {"run": "quick", "dataset": "d", "id": "1", "error": None},
        {"run": "quick", "dataset": "d", "id": "2", "error": "job_timeout", "error_transient": True},
        {"run": "quick", "dataset": "d", "id": "3", "error": "invalid_request", "error_transient": False},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"run": "quick", "dat')  # torn last line
    assert finished_keys(read_results(path)) == {("quick", "d", "1"), ("quick", "d", "3")}


def test_paper_suite_covers_every_table() -> None:
    plan = suite_plan("paper", [1, 2, 4, 8])
    assert [c.mode for c in plan.modes] == ["direct", "cot", "quick", "slow"]
    assert {c.key for c in plan.strategies} >= {"slow-majority-min-n8", "slow-best_of_n-prod-n8", "slow-greedy-last-n8"}
    assert {c.candidates for c in plan.scaling} == {1, 2, 4, 8} and plan.capabilities
    assert len(plan.runs) == len({c.key for c in plan.runs})
    assert RunConfig.make("slow").key == "slow-beam-last-n3-w2"


async def test_judge_talks_only_to_its_configured_endpoint() -> None:
    seen: list[httpx.Request] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        reply = "yes" if "Reference answer" in body["messages"][0]["content"] else "calculation"
        return httpx.Response(200, json={"choices": [{"message": {"content": reply}}]})

    judge = LlmJudge("http://judge.local/v1", "m", "secret", transport=httpx.MockTransport(endpoint))
    async with judge:
        assert await judge.equivalent("q", "1/2", "one half")
        assert await judge.capability("q", "2 + 2 = 4") == "calculation"
    assert all(str(r.url) == "http://judge.local/v1/chat/completions" for r in seen)
    assert seen[0].headers["authorization"] == "Bearer secret"
    with pytest.raises(ValueError, match="base URL"):
        LlmJudge.from_settings(Settings(eval_judge_base_url=None))
