"""``research.annotate.engine`` without a model: ids, configuration checks, outcomes decided before any call."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.annotate.client import ChatClient
from research.annotate.engine import AnnotateConfig, Annotator, record_id
from research.annotate.problems import load_problems


def test_record_ids_are_deterministic_and_depend_on_mode_and_prompt_style() -> None:
    dynamic = AnnotateConfig()
    assert record_id("p1", dynamic) == record_id("p1", AnnotateConfig(temperature=0.1))
    assert record_id("p1", dynamic) != record_id("p2", dynamic)
    assert record_id("p1", dynamic) != record_id("p1", AnnotateConfig(mode="atomize"))
    assert record_id("p1", dynamic) != record_id("p1", AnnotateConfig(prompt_style="tiny"))


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown prompt style"):
        AnnotateConfig(prompt_style="nope")
    with pytest.raises(ValueError, match="dynamic mode only"):
        AnnotateConfig(mode="atomize", prompt_style="tiny")


async def test_missing_images_and_missing_solutions_are_recorded_rejections(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        '{"id": "a", "question": "What is 2 + 2?", "answer": "4", "image": "gone.png"}\n'
        '{"id": "b", "question": "What is 2 + 3?", "answer": "5"}\n'
    )
    missing, no_solution = load_problems(tmp_path / "p.jsonl")
    # port 9 (discard) on localhost: nothing listens, and nothing may be sent in these cases anyway
    async with ChatClient("http://127.0.0.1:9/v1", "m", max_retries=0) as client:
        record = await Annotator(client, AnnotateConfig()).annotate(missing)
        assert (record["status"], record["reason"]) == ("rejected", "image_missing")
        record = await Annotator(client, AnnotateConfig(mode="atomize")).annotate(no_solution)
        assert (record["status"], record["reason"]) == ("rejected", "no_solution")
        assert client.stats.http_attempts == 0
        refused = await Annotator(client, AnnotateConfig()).annotate(no_solution)
        assert (refused["status"], refused["reason"]) == ("rejected", "connection")
        assert refused["unusable"] == [{"step": 0, "reason": "connection", "excerpt": ""}]
