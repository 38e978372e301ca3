"""PRM input formats, shared by the serving backends and PRM training so both tokenize steps identically.

The classic trap (AtomThink v1's data engine, many OpenR reports): the step tag is written one way in training and
tokenized differently at inference. Here every path is encoded *segment by segment* (question, then each step followed
by its tag) and the score is read at the tag's last token, whatever the tokenizer does at segment borders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class PrmPreset:
    """How a PRM expects a scored path to look."""

    name: str
    kind: Literal["causal_lm", "token_classification"]
    step_tag: str
    """Text after every step; the score is read at its last token."""
    plus_label: str = "+"
    minus_label: str = "-"
    question_suffix: str = " "
    system_prompt: str | None = None
    """token_classification (Qwen2.5-Math-PRM): system message of the chat template."""


MATH_PSA = PrmPreset("math-psa", "causal_lm", step_tag=" \n\n\n\n\n", plus_label=" +", minus_label=" -")
MATH_SHEPHERD = PrmPreset("math-shepherd", "causal_lm", step_tag=" ки", question_suffix=" ")
QWEN_PRM = PrmPreset(
    "qwen-prm",
    "token_classification",
    step_tag="<extra_0>",
    system_prompt="Please reason step by step, and put your final answer within \\boxed{}.",
)
TINY_PRM = PrmPreset("tiny", "causal_lm", step_tag=" ки", question_suffix="\n")

PRM_PRESETS: dict[str, PrmPreset] = {p.name: p for p in (MATH_PSA, MATH_SHEPHERD, QWEN_PRM, TINY_PRM)}


def get_prm_preset(name: str) -> PrmPreset:
    try:
        return PRM_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown PRM preset {name!r}; known: {sorted(PRM_PRESETS)}") from None


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def label_token_ids(tokenizer: Any, preset: PrmPreset) -> tuple[int, int]:
    """Token ids of the ``+`` and ``-`` labels; each must be exactly one token or scoring would be meaningless."""
    ids = []
    for label in (preset.plus_label, preset.minus_label):
        tokens = _ids(tokenizer, label)
        if len(tokens) != 1:
            raise ValueError(f"PRM label {label!r} is {len(tokens)} tokens {tokens}; preset {preset.name} needs 1")
        ids.append(tokens[0])
    return ids[0], ids[1]


def encode_path(tokenizer: Any, preset: PrmPreset, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of one scored path and, for each step, the index of the token whose logits carry its score."""
    if preset.kind == "token_classification":
        return _encode_chat_path(tokenizer, preset, question, steps)
    ids: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None:
        ids.append(bos)
    ids += _ids(tokenizer, question + preset.question_suffix)
    tag_ids = _ids(tokenizer, preset.step_tag)
    if not tag_ids:
        raise ValueError(f"PRM step tag {preset.step_tag!r} tokenizes to nothing")
    positions = []
    for step in steps:
        ids += _ids(tokenizer, step.strip()) + tag_ids
        positions.append(len(ids) - 1)
    return ids, positions


def _encode_chat_path(
    tokenizer: Any, preset: PrmPreset, question: str, steps: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Qwen2.5-Math-PRM layout: system, user question, assistant steps each ending in the separator token."""
    messages = [
        {"role": "system", "content": preset.system_prompt or ""},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "".join(s.strip() + preset.step_tag for s in steps)},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = _ids(tokenizer, text)
    sep = _ids(tokenizer, preset.step_tag)
    if len(sep) != 1:
        raise ValueError(f"separator {preset.step_tag!r} must be one token, got {sep}")
    positions = [i for i, t in enumerate(ids) if t == sep[0]]
    if len(positions) != len(steps):
        raise ValueError(f"found {len(positions)} separators for {len(steps)} steps; does a step contain it?")
    return ids, positions
