"""Golden tests: the official presets render what the official AtomThink functions produce, character for character.

Expected values: ``tests/fixtures/official/atomthink_golden.json``, written by ``render_golden.py`` beside it from
the official functions' own output (Quinn777/AtomThink v1 at 5bb7f3e, v2 at 1e4ae55; files named in its ``source``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from atomthink.prompts import ATOMTHINK_V1, ATOMTHINK_V2, TINY, PromptPreset, resolve_prompt_preset
from atomthink.steps import ATOMTHINK_V1_RULES, ATOMTHINK_V2_RULES, get_step_rules

GOLDEN: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "official" / "atomthink_golden.json").read_text()
)
STEPS = ["Step 1: Bar B is 9.", "Step 2: Bar C is 1.\nSo the difference is 9 - 1."]
PRESETS = {"v1": ATOMTHINK_V1, "v2": ATOMTHINK_V2}


def test_the_template_is_the_official_text() -> None:
    assert (
        ATOMTHINK_V1.image_prefix + ATOMTHINK_V1.step_template.format(question="{}", history="{}")
        == (GOLDEN["v1_template"])
    )
    assert ATOMTHINK_V2.step_template.format(question="{}", history="{}") == GOLDEN["v2_template"]
    assert GOLDEN["v2_template"].endswith('...".\n')


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("record", GOLDEN["prompts"], ids=["plain", "choices"])
@pytest.mark.parametrize("n_steps", [0, 1, 2])
def test_step_prompts_equal_the_official_rendering(version: str, record: dict[str, Any], n_steps: int) -> None:
    preset = PRESETS[version]
    rendered = preset.image_prefix + preset.render("step", record["question"], STEPS[:n_steps])
    assert rendered == record[version][str(n_steps)]


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("record", GOLDEN["prompts"], ids=["plain", "choices"])
def test_fallback_prompt_equals_the_official_fail_try(version: str, record: dict[str, Any]) -> None:
    preset = PRESETS[version]
    assert preset.image_prefix + preset.render("final", record["question"], STEPS) == record[version]["fallback"]


def test_v1_slowthink_newline_joiner_is_one_field_away() -> None:
    # v1 SlowThink's construct_prompt_from_rollout joins with "\n"; the preset follows the SFT data's "\n\n".
    variant: PromptPreset = dataclasses.replace(ATOMTHINK_V1, history_joiner="\n")
    record = GOLDEN["prompts"][0]
    assert (
        variant.image_prefix + variant.render("step", record["question"], STEPS)
        == (record["v1"]["2_v1_slowthink_newline"])
    )


@pytest.mark.parametrize("case", GOLDEN["rules"], ids=lambda c: repr(c["step"][:30]))
def test_step_rules_equal_the_official_txt_verifier(case: dict[str, Any]) -> None:
    assert len(GOLDEN["rules"]) >= 15
    for version, rules in (("v1", ATOMTHINK_V1_RULES), ("v2", ATOMTHINK_V2_RULES)):
        verdict = rules.check(case["step"], case["previous"])
        assert [verdict.invalid is None, verdict.final] == case[version], version


def test_presets_name_their_rules_and_official_search_defaults() -> None:
    assert get_step_rules(ATOMTHINK_V1.step_rules) is ATOMTHINK_V1_RULES
    assert get_step_rules(ATOMTHINK_V2.step_rules) is ATOMTHINK_V2_RULES
    for preset in (ATOMTHINK_V1, ATOMTHINK_V2):
        assert preset.step_delimiter is None  # official generation: no stop string, the step ends at EOS
        assert preset.search.beam_start == "beams" and preset.search.keep_invalid
    assert ATOMTHINK_V2.search.temperature_ramp == 0.5 and ATOMTHINK_V1.search.temperature_ramp == 0
    assert (ATOMTHINK_V1.step_max_tokens, ATOMTHINK_V2.step_max_tokens) == (1024, 4096)


def test_tiny_preset_is_unchanged() -> None:
    # The shipped tiny models were trained on exactly these strings (atomthink/data): they must not move.
    assert TINY.render("step", "Q?", ["a", "b"]) == "[step] Q?\na\nb"
    assert TINY.render("step", "Q?") == "[step] Q?\n"
    assert TINY.render("final", "Q?", ["a"]) == "[direct] Q?"
    assert (TINY.step_delimiter, TINY.step_max_tokens, TINY.step_rules) == ("\n", 96, "tiny")
    assert (
        resolve_prompt_preset("auto", Path(__file__).resolve().parents[3] / "models" / "atomthink-tiny-policy") is TINY
    )
