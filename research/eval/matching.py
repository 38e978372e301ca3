"""Is a predicted answer right? Rules first (option letter or text, integer, float at the item's precision), then
Hugging Face's ``math-verify`` for fractions, radicals and other LaTeX; an LLM judge may be asked afterwards
(``research.eval.judge``), never by default.

Documented cases (tested over the MathVista and MathVerse fixtures):

* multiple choice: ``"C"``, ``"(C)"``, ``"C. 145°"`` or the option text ``"145°"`` (also ``"145"``) all pick option C;
* integer: ``"1000"``, ``"1,000"``, ``"1000.0"`` and ``"1000 g"`` equal ``1000``;
* float: compared after rounding both to the item's ``precision`` decimals (MathVista's rule): ``1.23`` at
  precision 1 is ``1.2``;
* fraction and LaTeX: ``3/2``, ``1.5`` and ``\\frac{6}{4}`` equal ``\\frac{3}{2}``; ``\\sqrt{12}`` equals
  ``2\\sqrt{3}`` (math-verify, symbolic).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from atomthink.steps import extract_answer
from research.eval.datasets import EvalItem

MatchMethod = Literal["letter", "option_text", "integer", "float", "number", "verifier", "string", "judge", "none"]

_LETTER_RE = re.compile(r"^(?:\(([A-Z])\)|([A-Z])(?=[.:)]|$))")
_OPTION_PHRASE_RE = re.compile(r"\b(?i:option|choice|answer(?: is)?)\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])")
_UNICODE_SQRT_RE = re.compile(r"√\s*(\d+(?:\.\d+)?|[A-Za-z]|\([^()]*\))")
_NUMBER_RE = re.compile(
    r"^(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)\s*"
    r"(?:°|\^\{?\\circ\}?|\\%|%|\\text\{[^}]*\}|[A-Za-z]{1,8}\.?(?:\^?[23])?)?$"
)
_LATEX_WRAPPERS = (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$"))


@dataclass(frozen=True)
class Match:
    """The verdict on one prediction and the rule that gave it."""

    correct: bool
    method: MatchMethod
    prediction: str | None
    """The prediction as compared: an option letter for multiple choice, else the extracted text."""


def prediction_of(answer: str | None, steps: Sequence[str], item: EvalItem) -> str | None:
    """The service's extracted answer, or, when it gave none, what the last step states."""
    if answer is not None and answer.strip():
        return answer.strip()
    if not steps:
        return None
    stated = extract_answer(steps[-1], item.choices)
    return stated or None


def match_answer(prediction: str | None, item: EvalItem) -> Match:
    """Compare a prediction with the item's gold answer by rule."""
    if prediction is None or not prediction.strip():
        return Match(False, "none", None)
    prediction = _unwrap(prediction.strip())
    if item.answer_type == "choice":
        return _match_choice(prediction, item)
    gold = _unwrap(item.answer.strip())
    if item.answer_type == "integer":
        pred_n, gold_n = to_number(prediction), to_number(gold)
        if pred_n is not None and gold_n is not None:
            return Match(pred_n == gold_n and float(pred_n).is_integer(), "integer", prediction)
    if item.answer_type == "float":
        pred_n, gold_n = to_number(prediction), to_number(gold)
        if pred_n is not None and gold_n is not None:
            digits = item.precision if item.precision is not None else _decimals(gold)
            return Match(round(pred_n, digits) == round(gold_n, digits), "float", prediction)
    if item.answer_type in ("text", "list", "integer", "float"):
        pred_n, gold_n = to_number(prediction), to_number(gold)
        if pred_n is not None and gold_n is not None:
            return Match(abs(pred_n - gold_n) <= 1e-6 * max(1.0, abs(gold_n)), "number", prediction)
        if _normalise(prediction) == _normalise(gold):
            return Match(True, "string", prediction)
        if verify_equivalent(gold, prediction):
            return Match(True, "verifier", prediction)
        return Match(False, "verifier", prediction)
    return Match(_normalise(prediction) == _normalise(gold), "string", prediction)


def _match_choice(prediction: str, item: EvalItem) -> Match:
    gold = item.gold_letter
    letters = [chr(ord("A") + i) for i in range(len(item.choices))] if item.choices else None
    letter = option_letter(prediction, item.choices)
    if letter is not None:
        return Match(letter == gold, "letter" if _is_letter_answer(prediction, letters) else "option_text", letter)
    return Match(False, "option_text", prediction)


def _is_letter_answer(prediction: str, letters: Sequence[str] | None) -> bool:
    letter = _leading_letter(prediction)
    if letter is None and (phrase := _OPTION_PHRASE_RE.search(prediction)):
        letter = phrase.group(1)
    return letter is not None and (letters is None or letter in letters)


def _leading_letter(text: str) -> str | None:
    """``C``, ``c``, ``(C)``, ``C.``, ``C: 145°``, ``(C) 145°``; not ``A pen costs 2``."""
    if len(text) == 1 and text.isalpha():
        return text.upper()
    match = _LETTER_RE.match(text)
    return (match.group(1) or match.group(2)) if match else None


def option_letter(prediction: str, choices: Sequence[str] | None) -> str | None:
    """The option a prediction names: by letter (``C``, ``(C)``, ``C. text``, ``option C``) or by option text."""
    letters = [chr(ord("A") + i) for i in range(len(choices))] if choices else None
    text = prediction.strip()
    if choices:
        # Option text first: an option may itself be a single letter ("A", "B" in MathVista puzzles) or a word.
        exact = [ltr for ltr, c in zip(letters or [], choices, strict=True) if _normalise(c) == _normalise(text)]
        if len(exact) == 1:
            return exact[0]
    letter = _leading_letter(text)
    if letter is not None and (letters is None or letter in letters):
        return letter
    phrase = _OPTION_PHRASE_RE.search(text)
    if phrase and (letters is None or phrase.group(1) in letters):
        return phrase.group(1)
    if not choices:
        return None
    value = to_number(text)
    if value is not None:
        same = [ltr for ltr, c in zip(letters or [], choices, strict=True) if to_number(_unwrap(c)) == value]
        if len(same) == 1:
            return same[0]
    same = [ltr for ltr, c in zip(letters or [], choices, strict=True) if verify_equivalent(c, text)]
    return same[0] if len(same) == 1 else None


def to_number(text: str) -> float | None:
    """A plain number, allowing thousands separators and a trailing unit (``1,000``, ``6cm``, ``145°``, ``12%``)."""
    match = _NUMBER_RE.match(text.strip().rstrip("."))
    if match is None:
        return None
    try:
        return float(match.group("num").replace(",", ""))
    except ValueError:
        return None


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def _unwrap(text: str) -> str:
    text = text.strip()
    for left, right in _LATEX_WRAPPERS:
        if text.startswith(left) and text.endswith(right) and len(text) > len(left) + len(right):
            text = text[len(left) : -len(right)].strip()
            break
    if text.startswith("\\boxed{") and text.endswith("}"):
        text = text[len("\\boxed{") : -1].strip()
    return _UNICODE_SQRT_RE.sub(lambda m: "\\sqrt{" + m.group(1).strip("()") + "}", text)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", _unwrap(text)).strip().rstrip(".").lower()


def verify_equivalent(gold: str, prediction: str) -> bool:
    """Symbolic equivalence by ``math-verify`` (both sides read as LaTeX, then as plain expressions)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # math-verify times out with SIGALRM, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    try:
        gold_parsed = parse(f"${_unwrap(gold)}$", extraction_config=config, parsing_timeout=timeout)  # type: ignore[arg-type]
        pred_parsed = parse(f"${_unwrap(prediction)}$", extraction_config=config, parsing_timeout=timeout)  # type: ignore[arg-type]
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except Exception:  # math-verify raises assorted sympy errors on text it cannot read
        return False
