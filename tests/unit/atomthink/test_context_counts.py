"""The tokenizers-only counter (``atomthink.context``: tokenizer.json, the chat template through jinja2, the image
positions from the processor config) counts every prompt exactly as transformers builds it: the golden is
transformers' own ``apply_chat_template`` text, its tokenizer's encoding and its processor's image expansion, for
the shipped tiny checkpoints, every prompt kind, with and without an image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from transformers import AutoConfig, AutoProcessor, AutoTokenizer

from atomthink.context import PolicyWindow, PrmWindow, image_positions, render_prompt_text
from atomthink.prm_format import encode_path
from atomthink.prompts import PromptPreset
from atomthink.protocol import SamplingParams
from atomthink.settings import DEFAULT_POLICY_DIR, DEFAULT_PRM_DIR, REPO_ROOT
from workers.backends.base import GenerationRequest

TEXT_POLICY_DIR = REPO_ROOT / "models" / "atomthink-tiny-text-policy"
QUESTIONS = ["What is 7 times 8?", "Find x:  2x + 3 = 11.\nChoices: (A) 4 (B) 5", "<image> </s> <s> ки +", ""]
HISTORIES: list[list[str]] = [[], ["Bar A is 7."], ["Bar A is 7.", "  7 x 8 = 56 ки", "The answer is 56."]]


def transformers_count(
    owner: Any, tokenizer: Any, processor: Any, preset: PromptPreset, request: GenerationRequest
) -> int:
    """The counter the gateway used before: the text from transformers' template, its tokenizer's ids, plus the
    positions the processor adds for a 32x32 image beyond the placeholder."""
    multimodal = processor is not None
    text = render_prompt_text(owner, preset, request, multimodal=multimodal)
    count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if request.image is not None and multimodal:
        expanded = processor(images=[Image.new("RGB", (32, 32))], text=[processor.image_token])
        plain = tokenizer(processor.image_token, add_special_tokens=False)["input_ids"]
        count += len(expanded["input_ids"][0]) - len(plain)
    return count


@pytest.mark.parametrize("model", [DEFAULT_POLICY_DIR, TEXT_POLICY_DIR], ids=["multimodal", "text"])
def test_policy_prompts_count_as_transformers_builds_them(model: Path) -> None:
    window = PolicyWindow.from_checkpoint(str(model))
    assert window is not None
    multimodal = hasattr(AutoConfig.from_pretrained(model), "vision_config")
    processor = AutoProcessor.from_pretrained(model) if multimodal else None
    tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(model)
    owner = processor if processor is not None else tokenizer
    assert window.multimodal == multimodal and window.tokenizer.chat_template == owner.chat_template
    image = Image.new("RGB", (640, 480))
    checked = 0
    for kind in ("step", "direct", "cot", "final"):
        for question in QUESTIONS:
            for steps in HISTORIES if kind == "step" else [[]]:
                for with_image in (False, True):
                    request = GenerationRequest(kind, question, steps, image if with_image else None, SamplingParams())
                    expected = render_prompt_text(owner, window.preset, request, multimodal=multimodal)
                    ours = render_prompt_text(window.tokenizer, window.preset, request, multimodal=multimodal)
                    assert ours == expected
                    assert window.prompt_tokens(request) == transformers_count(
                        owner, tokenizer, processor, window.preset, request
                    )
                    checked += 1
    assert checked == 2 * (len(QUESTIONS) * len(HISTORIES) + 3 * len(QUESTIONS))
    if multimodal:
        assert window.image_tokens == image_positions(str(model)) > 0


def test_prm_paths_count_as_transformers_encodes_them() -> None:
    window = PrmWindow.from_checkpoint(str(DEFAULT_PRM_DIR))
    assert window is not None
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_PRM_DIR)
    assert window.tokenizer.bos_token_id == tokenizer.bos_token_id
    for question in QUESTIONS:
        for steps in [[""], *HISTORIES]:
            assert encode_path(window.tokenizer, window.preset, question, steps) == encode_path(
                tokenizer, window.preset, question, steps
            )
            for text in (question, *steps):
                for special in (False, True):
                    assert window.tokenizer(text, add_special_tokens=special)["input_ids"] == list(
                        tokenizer(text, add_special_tokens=special)["input_ids"]
                    )
