"""Atomic steps: is it final, what answer does it state, is it a valid step (AtomThink's text verifier)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_FINAL_RE = re.compile(r"final answer(?:\s+is)?\s*[:：]?|\bthe answer is\s*[:：]?", re.IGNORECASE)
_LETTER_RE = re.compile(r"^\(?([A-Z])\)?(?:[.:)]|\s|$)")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?;])\s+|\n+")

MAX_STEP_WORDS = 500
MAX_STEP_MENTIONS = 2
MAX_REPEATED_SENTENCE_RATIO = 0.45
MAX_CHARSET_JACCARD = 0.98


def is_final(step: str) -> bool:
    """A step is final when it states the final answer ("To sum up, the final answer is: ...", "The answer is")."""
    return _FINAL_RE.search(step) is not None


def extract_answer(text: str, choices: Sequence[str] | None = None) -> str:
    """The answer a final step (or a direct answer) states: option letter when there are choices, else the value."""
    matches = list(_FINAL_RE.finditer(text))
    raw = text[matches[-1].end() :] if matches else text
    answer = raw.strip().splitlines()[0].strip() if raw.strip() else ""
    answer = answer.strip(" .。*$`\"'")
    if answer.startswith("\\boxed{") and answer.endswith("}"):
        answer = answer[len("\\boxed{") : -1].strip()
    if choices:
        return _to_option_letter(answer, choices)
    return answer


def _to_option_letter(answer: str, choices: Sequence[str]) -> str:
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    match = _LETTER_RE.match(answer)
    if match and match.group(1) in letters:
        return match.group(1)
    normalized = answer.strip().lower()
    for letter, choice in zip(letters, choices, strict=True):
        if normalized == str(choice).strip().lower():
            return letter
    return answer


def invalid_reason(step: str, previous: str | None = None) -> str | None:
    """Why a sampled step must be resampled, or ``None`` when it is a valid atomic step."""
    text = step.strip()
    if not text:
        return "empty"
    if text.lower().count("step") > MAX_STEP_MENTIONS:
        return "several steps in one"
    if len(text.split()) > MAX_STEP_WORDS:
        return "too long"
    sentences = [s.strip() for s in _SENTENCE_SPLIT_RE.split(text) if s.strip()]
    if len(sentences) > 1:
        repeated = 1 - len(set(sentences)) / len(sentences)
        if repeated > MAX_REPEATED_SENTENCE_RATIO:
            return "repeats itself"
    if previous is not None:
        a, b = set(text), set(previous.strip())
        if a and b and len(a & b) / len(a | b) > MAX_CHARSET_JACCARD:
            return "near copy of the previous step"
    return None
