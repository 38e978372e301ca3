"""PRM inputs on real vocabularies: ids and score positions equal the reference implementations' own encoding.

References, written here as their one-line expressions:
- Math-psa (AtomThink v1 PRM): Quinn777/AtomThink 5bb7f3e ``evaluation.py`` ``reward``: the question cut from the
  step prompt with newlines made spaces, ``question + " " + " \\n\\n\\n\\n\\n".join(rollout) + " \\n\\n\\n\\n\\n"``,
  ``tokenizer.encode`` of the whole string, scores where the id is ``tokenizer.encode(" \\n\\n\\n\\n\\n")[-1]``.
- Math-Shepherd: openreasoner/openr ``reason/inference/rm_call.py`` ``replace_step_tag`` (steps stripped, joined and
  ended by ``" ки\\n"``), format ``"{question} {answer}"``; ``prm/infer_fns.py``: scores where the id is
  ``tokenizer.encode("ки")[-1]``, labels ``tokenizer.encode("+ -")[1:]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atomthink.prm_format import MATH_PSA, MATH_SHEPHERD, encode_path, label_token_ids
from tests.real_vocab import mistral_v01_tokenizer, qwen_tokenizer

GOLDEN_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "official" / "atomthink_golden.json"
GOLDEN = json.loads(GOLDEN_FILE.read_text())
QUESTIONS = [
    "What is the difference between the heights of bar B and bar C?",
    "As shown in the figure, AB = 6 and BC = 8. Find AC.\nChoices:\n(A) 10\n(B) 12\n(C) 14",
]
PATHS = [
    ["Step 1: Bar B is 9."],
    ["Step 1: Bar B is 9.", "Step 2: Bar C is 1.\nSo 9 - 1 = 8.", "To sum up, the final answer is: 8"],
    ["Step 1: AC² = 6² + 8² = 100 (Pythagoras, ∠B = 90°).", "Step 2: AC = √100 = 10", "Final answer: A"],
]


@pytest.fixture(scope="module")
def qwen() -> Any:
    return qwen_tokenizer()


@pytest.fixture(scope="module")
def mistral() -> Any:
    return mistral_v01_tokenizer()


def test_vocabularies_are_the_real_ones(qwen: Any, mistral: Any) -> None:
    # The ids the official code comments name (AtomThink/OpenR load_reward_model, prm/infer_fns.py).
    assert qwen.encode(" + -") == [488, 481] and qwen.encode(" \n\n\n\n\n") == [76325]
    assert mistral.encode("+ -") == [1, 648, 387] and mistral.encode("ки") == [1, 12902]


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("steps", PATHS)
def test_math_psa_equals_the_atomthink_reward_input(qwen: Any, question: str, steps: list[str]) -> None:
    init_prompt = GOLDEN["v1_template"].format(question, "")
    cut = init_prompt.split("THE GIVEN QUESTION:\n")[-1].split("HISTORICAL REASONING STEPS:")[0].replace("\n", " ")
    reference = qwen.encode(cut + " " + " \n\n\n\n\n".join(steps) + " \n\n\n\n\n")
    step_tag_id = qwen.encode(" \n\n\n\n\n")[-1]
    ids, positions = encode_path(qwen, MATH_PSA, question, steps)
    assert ids == reference
    assert positions == [i for i, t in enumerate(reference) if t == step_tag_id]
    assert label_token_ids(qwen, MATH_PSA) == tuple(qwen.encode(" + -"))


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("steps", PATHS)
def test_math_shepherd_equals_openr_input(mistral: Any, question: str, steps: list[str]) -> None:
    answer = "".join(f"{s.strip()} ки\n" for s in steps)  # replace_step_tag: f" {step_tag}".join(...) + f" {step_tag}"
    reference = mistral.encode(f"{question} {answer}")
    step_tag_id = mistral.encode("ки")[-1]
    ids, positions = encode_path(mistral, MATH_SHEPHERD, question, steps)
    assert ids == reference
    assert positions == [i for i, t in enumerate(reference) if t == step_tag_id]
    assert label_token_ids(mistral, MATH_SHEPHERD) == tuple(mistral.encode("+ -")[1:])


def test_segment_encoding_would_add_border_tokens(qwen: Any) -> None:
    # Why the whole string is encoded: piece by piece, " Step" becomes ' ' + 'Step' at the question/step border.
    whole = qwen.encode("Q? Step 1")
    pieces = qwen.encode("Q? ") + qwen.encode("Step 1")
    assert qwen.convert_ids_to_tokens(whole)[:3] == ["Q", "?", "ĠStep"]
    assert qwen.convert_ids_to_tokens(pieces)[:4] == ["Q", "?", "Ġ", "Step"]
