"""PRM input formats, shared by the serving backends and PRM training.

Each preset writes a path as its reference implementation does (the question, then every step followed by the step
tag) and encodes it as ONE string, as the reference code does; the score of a step is read at the token that holds
the tag in that whole-string encoding (found by encoding the text up to the tag and checking it is a prefix of the
whole encoding). Encoding segment by segment instead adds tokens at the borders on real vocabularies (Qwen
``' ', 'Step'`` for ``' Step'``), which the PRM never saw in training.

The ``tiny`` preset keeps the segment-by-segment encoding the shipped tiny PRM was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from atomthink.prompts import FALLBACK_INSTRUCTION


@dataclass(frozen=True)
class PrmPreset:
    """How a PRM expects a scored path to look."""

    name: str
    kind: Literal["causal_lm", "token_classification"]
    step_tag: str
    """Text after every step."""
    plus_label: str = "+"
    minus_label: str = "-"
    question_suffix: str = " "
    """Text between the (prepared) question and the first step."""
    system_prompt: str | None = None
    """token_classification (Qwen2.5-Math-PRM): system message of the chat template."""
    score_char: int = -1
    """Index in ``step_tag`` of the character whose token carries the score (Math-Shepherd: the ``и`` of ``ки``)."""
    question_style: Literal["plain", "atomthink"] = "plain"
    """``atomthink``: the question as AtomThink's ``reward()`` cuts it from the step prompt (instruction line and
    blank line appended, every newline made a space)."""
    encoding: Literal["whole", "segments"] = "whole"
    strip_steps: bool = False
    """Strip each step before writing it (OpenR's ``replace_step_tag`` does)."""

    def prepare_question(self, question: str) -> str:
        if self.question_style == "atomthink":
            return f"{question}\n{FALLBACK_INSTRUCTION}\n\n".replace("\n", " ")
        return question


# AtomThink v1 PRM (OpenR Math-psa): ``question + " " + " \n\n\n\n\n".join(rollout) + " \n\n\n\n\n"`` with the
# question cut from the step prompt (v1 evaluation.py ``reward``; v2 atomthink_slow.py ``reward``); labels " +" / " -"
# (ids 488 / 481 on the Qwen vocabulary), the score at the tag token (76325, ``tokenizer.encode(" \n\n\n\n\n")[-1]``).
MATH_PSA = PrmPreset(
    "math-psa", "causal_lm", step_tag=" \n\n\n\n\n", plus_label=" +", minus_label=" -", question_style="atomthink"
)
# Math-Shepherd as OpenR writes it (reason/inference/rm_call.py ``replace_step_tag`` with step_tag "ки\n",
# format "{question} {answer}"; prm/infer_fns.py ``_math_shepherd_infer_fn``): every step stripped and followed by
# " ки\n", labels "+" / "-" (648 / 387 on Mistral v0.1), the score at the "ки" token (12902).
MATH_SHEPHERD = PrmPreset("math-shepherd", "causal_lm", step_tag=" ки\n", score_char=2, strip_steps=True)
# Qwen2.5-Math-PRM-7B model card: system prompt, user question, assistant "<extra_0>".join(steps) + "<extra_0>".
QWEN_PRM = PrmPreset(
    "qwen-prm",
    "token_classification",
    step_tag="<extra_0>",
    system_prompt="Please reason step by step, and put your final answer within \\boxed{}.",
)
TINY_PRM = PrmPreset("tiny", "causal_lm", step_tag=" ки", question_suffix="\n", encoding="segments", strip_steps=True)

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
    if preset.encoding == "segments":
        return _encode_segments(tokenizer, preset, question, steps)
    return _encode_whole(tokenizer, preset, question, steps)


def path_text(preset: PrmPreset, question: str, steps: Sequence[str]) -> tuple[str, list[int]]:
    """The path as one string and, per step, the character index that carries its score."""
    text = preset.prepare_question(question) + preset.question_suffix
    score_chars = []
    for step in steps:
        text += (step.strip() if preset.strip_steps else step) + preset.step_tag
        score_chars.append(len(text) - len(preset.step_tag) + (preset.score_char % len(preset.step_tag)))
    return text, score_chars


def _encode_whole(
    tokenizer: Any, preset: PrmPreset, question: str, steps: Sequence[str]
) -> tuple[list[int], list[int]]:
    text, score_chars = path_text(preset, question, steps)
    ids = list(tokenizer(text)["input_ids"])
    positions = []
    for char in score_chars:
        prefix = list(tokenizer(text[: char + 1])["input_ids"])
        if ids[: len(prefix)] != prefix:
            raise ValueError(
                f"PRM preset {preset.name}: the step tag {preset.step_tag!r} merges with the text after it in this "
                "tokenizer's whole-string encoding, so no token carries the score alone"
            )
        positions.append(len(prefix) - 1)
    return ids, positions


def _encode_segments(
    tokenizer: Any, preset: PrmPreset, question: str, steps: Sequence[str]
) -> tuple[list[int], list[int]]:
    """The tiny PRM's training layout: question, then each step followed by its tag, each encoded on its own."""
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


def chat_path_messages(preset: PrmPreset, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    """Qwen2.5-Math-PRM's chat, as its model card writes it: steps joined by the separator, one more at the end."""
    return [
        {"role": "system", "content": preset.system_prompt or ""},
        {"role": "user", "content": question},
        {"role": "assistant", "content": preset.step_tag.join(steps) + preset.step_tag},
    ]


def _encode_chat_path(
    tokenizer: Any, preset: PrmPreset, question: str, steps: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Qwen2.5-Math-PRM layout: the chat template's text, encoded whole; scores at every separator token."""
    text = tokenizer.apply_chat_template(
        chat_path_messages(preset, question, steps), tokenize=False, add_generation_prompt=False
    )
    ids = list(tokenizer(text)["input_ids"])
    sep = _ids(tokenizer, preset.step_tag)
    if len(sep) != 1:
        raise ValueError(f"separator {preset.step_tag!r} must be one token, got {sep}")
    positions = [i for i, t in enumerate(ids) if t == sep[0]]
    if len(positions) != len(steps):
        raise ValueError(f"found {len(positions)} separators for {len(steps)} steps; does a step contain it?")
    return ids, positions
