"""What the annotator asks: the dynamic-prompting node prompt, the short-CoT atomization prompt, their JSON schemas.

Two prompt styles:

* ``generic`` (default): instructions for a general instruction-following LLM, answered as JSON. The dynamic
  prompt hands over the question and the path so far and asks for ONE node ``{previous_stage, current_state,
  action, content, answer}``, where the model picks the action itself: ``continue`` (reason on), ``verify`` (check
  an earlier step), ``conclude`` (state the final answer). The atomization prompt hands over a short solution and
  asks for ``{steps: [{content, action}], answer}``.
* a step preset of ``atomthink.prompts`` (``tiny``, ``atomthink-v1``, ``atomthink-v2``): the checkpoint's own
  step prompt (AtomThink checkpoints and the tiny models produce one plain-text atomic step per call); a step
  that states the final answer concludes. Dynamic mode only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from atomthink.prompts import PRESETS, PromptPreset, format_question

Action = Literal["continue", "verify", "conclude"]
ACTIONS: tuple[Action, ...] = ("continue", "verify", "conclude")
GENERIC = "generic"
PROMPT_STYLES = (GENERIC, *sorted(PRESETS))

SYSTEM = (
    "You annotate step-by-step solutions of math problems, one atomic step at a time. An atomic step does one "
    "thing: reads one value from the image or the question, defines one variable, applies one rule or formula, "
    "does one calculation, or states the conclusion. Reply with JSON only."
)

DYNAMIC_INSTRUCTION = """QUESTION:
{question}

REASONING SO FAR:
{history}

Write the next node of the reasoning path as a JSON object with these fields:
- "previous_stage": one sentence on what the steps so far established ("none" before the first step);
- "current_state": one sentence on what is known now and what is still needed;
- "action": "continue" to take the next reasoning step, "verify" to check an earlier step, or "conclude" when the \
answer is established;
- "content": the single atomic step itself (for "conclude": "To sum up, the final answer is: <answer>");
- "answer": the final answer (an option letter for multiple choice) when the action is "conclude", else null."""

ATOMIZE_INSTRUCTION = """QUESTION:
{question}

SHORT SOLUTION:
{solution}

Rewrite the short solution as a sequence of atomic steps (one reading, definition, rule, calculation or \
conclusion each), filling in any step the short solution skips, keeping its numbers. Reply with a JSON object:
- "steps": a list of {{"content": "<the step>", "action": "continue" | "verify" | "conclude"}}; the last step \
concludes with "To sum up, the final answer is: <answer>";
- "answer": the final answer (an option letter for multiple choice)."""

NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "previous_stage": {"type": "string"},
        "current_state": {"type": "string"},
        "action": {"type": "string", "enum": list(ACTIONS)},
        "content": {"type": "string"},
        "answer": {"type": ["string", "null"]},
    },
    "required": ["previous_stage", "current_state", "action", "content", "answer"],
    "additionalProperties": False,
}
PATH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"content": {"type": "string"}, "action": {"type": "string", "enum": list(ACTIONS)}},
                "required": ["content", "action"],
                "additionalProperties": False,
            },
        },
        "answer": {"type": "string"},
    },
    "required": ["steps", "answer"],
    "additionalProperties": False,
}


def response_format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """OpenAI's structured-output field (vLLM takes it too and decodes under the schema)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def question_text(question: str, choices: Sequence[str] | None) -> str:
    return format_question(question, choices)


def history_text(steps: Sequence[str]) -> str:
    return "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps)) or "(none yet)"


def dynamic_messages(question: str, steps: Sequence[str]) -> tuple[str | None, str]:
    """``(system, user text)`` of one generic dynamic-prompting call."""
    return SYSTEM, DYNAMIC_INSTRUCTION.format(question=question, history=history_text(steps))


def atomize_messages(question: str, solution: str) -> tuple[str | None, str]:
    return SYSTEM, ATOMIZE_INSTRUCTION.format(question=question, solution=solution.strip())


def preset_messages(preset: PromptPreset, question: str, steps: Sequence[str]) -> tuple[str | None, str]:
    """A step preset's own prompt for the next step (no system message; the image goes in front of the text)."""
    return None, preset.render("step", question, steps)
