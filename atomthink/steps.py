"""Atomic steps: is it final, what answer does it state, is it a valid step.

Two families of step rules: the official AtomThink ``txt_verifier`` (v1 and v2, exactly as the reference code
decides), and the ``tiny`` rules the shipped tiny models were trained and evaluated with (``is_final`` and
``invalid_reason`` below). A prompt preset names its rules.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


@dataclass(frozen=True)
class StepVerdict:
    """What the step rules say of one sampled step."""

    invalid: str | None
    """Why the step is rejected, or ``None``."""
    final: bool
    """The step states the final answer (the search may stop)."""


class StepRules(Protocol):
    """Judges a sampled step given the step before it (``None`` at the first step)."""

    @property
    def name(self) -> str: ...

    def check(self, step: str, previous: str | None) -> StepVerdict: ...


@dataclass(frozen=True)
class TinyStepRules:
    """The rules of the shipped tiny models: ``is_final`` (any case) and ``invalid_reason`` above.

    They differ from the official verifier (case-insensitive "step" count and final phrases, sentence split on
    ``;`` and newlines too, repeated-sentence share counted per sentence, Jaccard without stripping ``Step N: ``);
    the tiny models were trained and evaluated with them, so they stay for the ``tiny`` preset only.
    """

    name: str = "tiny"

    def check(self, step: str, previous: str | None) -> StepVerdict:
        return StepVerdict(invalid_reason(step, previous), is_final(step))


_STEP_NUMBER_RE = re.compile(r"Step \d+: ")
_OFFICIAL_SENTENCE_RE = re.compile(r"[.!?]")


def _official_repeated_sentence_ratio(text: str) -> float:
    """``get_repeated_sentence_ratio``: distinct sentences that occur more than once, over all sentences."""
    sentences = [s.strip() for s in _OFFICIAL_SENTENCE_RE.split(text) if s.strip()]
    if not sentences:
        return 0.0
    return sum(1 for count in Counter(sentences).values() if count > 1) / len(sentences)


def _official_jaccard(a: str, b: str) -> float:
    """``jaccard_similarity``: character sets after removing ``Step N: ``; 1.0 when both are empty."""
    set_a, set_b = set(_STEP_NUMBER_RE.sub("", a)), set(_STEP_NUMBER_RE.sub("", b))
    union = len(set_a | set_b)
    return 1.0 if union == 0 else len(set_a & set_b) / union


@dataclass(frozen=True)
class OfficialStepRules:
    """AtomThink's ``txt_verifier(response, last_response)``, check for check and in the same order.

    Sources: v1 ``utils/inference_utils.py`` at 5bb7f3e (v1 ``evaluation.py`` imports it as ``verifier``, a name
    that module does not define: it clearly means this function) and v2
    ``src/llamafactory/evaluation/utils/inference_utils.py`` at 1e4ae55, which adds the 500-word limit and two
    phrases. An invalid step is never final, as there. ``previous`` is ``""`` at the first step, as officially.
    """

    name: str
    final_phrases: tuple[str, ...]
    max_words: int | None = None

    def check(self, step: str, previous: str | None) -> StepVerdict:
        if not step:
            return StepVerdict("empty", False)
        if step.count("Step") > 2 or step.count("step") > 2:
            return StepVerdict("several steps in one", False)
        if _official_repeated_sentence_ratio(step) > 0.45:
            return StepVerdict("repeats itself", False)
        if _official_jaccard(step, previous or "") > 0.98:
            return StepVerdict("near copy of the previous step", False)
        if self.max_words is not None and len(step.split(" ")) > self.max_words:
            return StepVerdict("too long", False)
        return StepVerdict(None, any(phrase in step for phrase in self.final_phrases))


_V1_FINAL_PHRASES = (
    "final answer is",
    "final answer:",
    "Final Answer:",
    "Final Answer is",
    "Final answer:",
    "Final answer is",
)
ATOMTHINK_V1_RULES = OfficialStepRules("atomthink-v1", _V1_FINAL_PHRASES)
ATOMTHINK_V2_RULES = OfficialStepRules(
    "atomthink-v2", (*_V1_FINAL_PHRASES, "The answer is", "the answer is"), max_words=500
)
TINY_RULES = TinyStepRules()

STEP_RULES: dict[str, StepRules] = {r.name: r for r in (ATOMTHINK_V1_RULES, ATOMTHINK_V2_RULES, TINY_RULES)}


def get_step_rules(name: str) -> StepRules:
    try:
        return STEP_RULES[name]
    except KeyError:
        raise ValueError(f"unknown step rules {name!r}; known: {sorted(STEP_RULES)}") from None
