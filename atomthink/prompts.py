"""Prompt presets: how a state (question + steps so far) becomes the policy's input text, per model family.

A preset only produces the *user message text* (with ``{image}`` replaced by nothing: the backend places the image
through the model's processor or chat template). Training (``atomthink.data``) and serving share these functions,
so the model is asked at inference exactly what it was taught.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PromptKind = Literal["step", "direct", "cot", "final"]

PRESET_FILE = "atomthink.json"
"""A checkpoint directory may carry this file: ``{"prompt_preset": ..., "prm_preset": ...}``."""


@dataclass(frozen=True)
class PromptPreset:
    """Templates and step conventions of one model family."""

    name: str
    step_template: str
    """Fields: ``question``, ``history`` (steps joined by ``history_joiner``; empty before the first step)."""
    direct_template: str
    cot_template: str
    final_template: str
    """Asked once when QuickThink ran out of steps without a final answer (fields: question, history)."""
    step_delimiter: str
    """Stop string that ends one atomic step (kept out of the step text)."""
    history_joiner: str
    empty_history: str = ""

    def render(self, kind: PromptKind, question: str, steps: Sequence[str] = ()) -> str:
        history = self.history_joiner.join(steps) if steps else self.empty_history
        template = {
            "step": self.step_template,
            "direct": self.direct_template,
            "cot": self.cot_template,
            "final": self.final_template,
        }[kind]
        return template.format(question=question, history=history)


ATOMTHINK_V1 = PromptPreset(
    name="atomthink-v1",
    step_template=(
        "THE GIVEN QUESTION:\n{question}\n\nHISTORICAL REASONING STEPS:\n{history}\n\n"
        "Based on the question and the historical reasoning steps, predict only the next small, focused step. "
        'If a conclusion has been reached, reply "To sum up, the final answer is: ...".'
    ),
    direct_template="{question}\nAnswer the question using a single word or phrase.",
    cot_template=(
        "{question}\nSolve the problem step by step, one short step per line, and end with "
        '"To sum up, the final answer is: ...".'
    ),
    final_template=(
        "{question}\nHISTORICAL REASONING STEPS:\n{history}\nAnswer the question using a single word or phrase."
    ),
    step_delimiter="\n",
    history_joiner="\n",
    empty_history="None",
)

TINY = PromptPreset(
    name="tiny",
    step_template="[step] {question}\n{history}",
    direct_template="[direct] {question}",
    cot_template="[cot] {question}",
    final_template="[direct] {question}",
    step_delimiter="\n",
    history_joiner="\n",
)

PRESETS: dict[str, PromptPreset] = {p.name: p for p in (ATOMTHINK_V1, TINY)}


def format_question(question: str, choices: Sequence[str] | None) -> str:
    """Append multiple-choice options as ``(A) ...`` lines, the layout MathVista uses."""
    if not choices:
        return question
    options = "\n".join(f"({chr(ord('A') + i)}) {choice}" for i, choice in enumerate(choices))
    return f"{question}\nChoices:\n{options}"


def read_checkpoint_presets(model_dir: str | Path) -> dict[str, str]:
    """The preset names a checkpoint declares in ``atomthink.json`` (empty when it has none)."""
    path = Path(model_dir) / PRESET_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def resolve_prompt_preset(name: str, model_dir: str | Path) -> PromptPreset:
    """``auto`` takes the checkpoint's declared preset, falling back to the AtomThink v1 template."""
    if name == "auto":
        name = read_checkpoint_presets(model_dir).get("prompt_preset", ATOMTHINK_V1.name)
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown prompt preset {name!r}; known: {sorted(PRESETS)}") from None


def chat_messages(prompt: str, has_image: bool, answer: str | None = None) -> list[dict[str, object]]:
    """The chat the policy sees (and is trained on): one user turn, image first, then optionally the answer."""
    content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, object]] = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
