"""The official record layouts (``research.data.official``) against hand-written fixtures from the facts note, and
the records ``research.annotate.export`` writes against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from atomthink.prm_format import MATH_PSA, TINY_PRM
from atomthink.prompts import ATOMTHINK_STEP_TEMPLATE
from research.annotate.export import prm_record, sft_records
from research.data.official import AnnotationStep, PrmRecord, SftRecord, TaggedPrmRecord, validate_prm

FIXTURES = json.loads((Path(__file__).parents[2] / "fixtures" / "official" / "records.json").read_text())
TAG = FIXTURES["step_tag"]


@pytest.mark.parametrize("record", FIXTURES["good"]["sft"])
def test_official_sft_records_validate(record: dict[str, Any]) -> None:
    parsed = SftRecord.model_validate(record)
    assert parsed.conversations[1].value.startswith("Step ")


@pytest.mark.parametrize("record", FIXTURES["bad"]["sft"])
def test_broken_sft_records_are_refused(record: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SftRecord.model_validate(record)


@pytest.mark.parametrize("record", FIXTURES["good"]["prm"])
def test_official_prm_records_validate(record: dict[str, Any]) -> None:
    assert validate_prm(record, TAG).label == ["+", "+", "-"]


@pytest.mark.parametrize("record", FIXTURES["bad"]["prm"])
def test_broken_prm_records_are_refused(record: dict[str, Any]) -> None:
    with pytest.raises((ValidationError, ValueError)):
        validate_prm(record, TAG)


@pytest.mark.parametrize("record", FIXTURES["good"]["annotation"])
def test_official_annotation_nodes_validate(record: dict[str, Any]) -> None:
    AnnotationStep.model_validate(record)


@pytest.mark.parametrize("record", FIXTURES["bad"]["annotation"])
def test_broken_annotation_nodes_are_refused(record: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AnnotationStep.model_validate(record)


ANNOTATION = {
    "id": "0123456789abcdef",
    "problem_id": "geo_0001",
    "question": "What is the perimeter of the rectangle?",
    "image": "images/geo_0001.png",
    "reference": "30",
    "status": "accepted",
    "steps": [
        {"content": "The width of the rectangle is 9.", "next_action": "continue", "action": "continue"},
        {"content": "The height of the rectangle is 6.", "next_action": "continue", "action": "continue"},
        {"content": "2 × (9 + 6) = 30", "next_action": "continue", "action": "verify"},
        {"content": "To sum up, the final answer is: 30", "next_action": "final_answer", "action": "conclude"},
    ],
}


def test_exported_sft_records_are_markov_records_in_the_official_layout() -> None:
    records = list(sft_records(ANNOTATION))
    assert len(records) == 4
    for k, record in enumerate(records):
        parsed = SftRecord.model_validate(record)
        human, gpt = parsed.conversations
        assert gpt.value == f"Step {k + 1}: {ANNOTATION['steps'][k]['content']}"
        history = "\n\n".join(f"Step {j + 1}: {s['content']}" for j, s in enumerate(ANNOTATION["steps"][:k]))
        assert human.value == "<image>\n" + ATOMTHINK_STEP_TEMPLATE.format(
            question=ANNOTATION["question"], history=history
        )
    assert records[0]["conversations"][0]["value"] == FIXTURES["good"]["sft"][0]["conversations"][0]["value"].replace(
        "Step 1: The width of the rectangle is 9.", ""
    )
    assert [r["next_action"] for r in records] == ["continue", "continue", "continue", "final_answer"]
    text_only = list(sft_records({**ANNOTATION, "image": None}))
    assert not text_only[0]["conversations"][0]["value"].startswith("<image>")


@pytest.mark.parametrize("preset", [MATH_PSA, TINY_PRM])
def test_exported_prm_records_validate_with_their_step_tag(preset: Any) -> None:
    record = prm_record(ANNOTATION, preset.name)
    TaggedPrmRecord.model_validate(record)
    parsed = validate_prm(record, preset.step_tag)
    assert parsed.label == ["+"] * 4
    assert PrmRecord.model_validate(record).process.count(preset.step_tag) == 4
