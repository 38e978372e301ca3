"""Atomic-step capability analysis, after the AtomThink paper: which capability each produced step uses, and per
capability the mean PRM score, the share of steps and an outcome-supervised score.

A step's capability comes from, in order of preference:

* ``tag``: synthetic items carry a capability per reference step; a produced step takes the tag of the reference
  step it is most like (text compared with every number masked, so a misread "Width w = 3." still aligns with
  "Width w = 2."), when the likeness reaches :data:`ALIGN_THRESHOLD`;
* ``judge``: an optional LLM judge (``--judge``) for items without tags;
* ``rule``: :func:`classify_step`, a rule-based classifier over the step text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from atomthink.steps import is_final
from research.eval.datasets import GoldStep

CAPABILITIES = ("image_recognition", "variable_definition", "calculation", "rule_application", "conclusion")
"""The fixed set, as the data engine tags steps (``research.data.CAPABILITIES``)."""
LABELS = {
    "image_recognition": "Image recognition",
    "variable_definition": "Variable definition",
    "calculation": "Calculation",
    "rule_application": "Rule / formula application",
    "conclusion": "Conclusion",
}
ALIGN_THRESHOLD = 0.6

_NUM_RE = re.compile(r"\d+(?:[.,]\d+)*")
_DEFINE_RE = re.compile(r"\b(?:let|denote[sd]?|define[sd]?|suppose|assume|represents?|stands? for)\b", re.I)
_ARITH_RE = re.compile(r"\d\s*[-+×x*/÷^]\s*\(?\s*\d.*=|=\s*[-+]?\d[\d.,]*\s*[-+×*/÷^]\s*\d|=\s*[-+]?\d[\d.,]*\s*$")
_FORMULA_RE = re.compile(
    r"\b(?:formula|theorem|rule|law|property|identity|definition of|sum of (?:the )?(?:interior )?angles|"
    r"pythagor\w*|similar|congruent|parallel|perpendicular|proportional|area of|perimeter of|volume of)\b",
    re.I,
)
_SYMBOLIC_RE = re.compile(r"^[A-Za-z][\w ]*=\s*[^=]*[A-Za-z][^=]*$")
_VISUAL_RE = re.compile(
    r"\b(?:image|figure|diagram|chart|graph|plot|table|picture|shown|labell?ed|marked|read|see|observe|"
    r"bar|axis|legend|column|row)\b",
    re.I,
)
_VALUE_RE = re.compile(r"(?:\bis\b|=|costs?|measures?|has|of)\s*[-+]?\d[\d.,]*\s*\w*\.?\s*$", re.I)


def classify_step(text: str) -> str:
    """A rule-based guess of the capability one step uses."""
    if is_final(text) or re.match(r"^\s*(?:therefore|thus|hence|so)\b.*\banswer\b", text, re.I):
        return "conclusion"
    if _DEFINE_RE.search(text):
        return "variable_definition"
    if _ARITH_RE.search(text) and len(_NUM_RE.findall(text)) >= 2:
        return "calculation"
    if _FORMULA_RE.search(text) or _SYMBOLIC_RE.match(text.strip().rstrip(".")):
        return "rule_application"
    if _VISUAL_RE.search(text) or _VALUE_RE.search(text):
        return "image_recognition"
    if len(_NUM_RE.findall(text)) >= 2:
        return "calculation"
    return "rule_application"


def _mask(text: str) -> str:
    return re.sub(r"\s+", " ", _NUM_RE.sub("#", text.lower())).strip()


def align_to_tags(steps: Sequence[str], gold: Sequence[GoldStep]) -> list[tuple[str, str]]:
    """``(capability, source)`` per produced step: the tag of the most alike reference step, else the rule."""
    masked_gold = [_mask(g.text) for g in gold]
    out: list[tuple[str, str]] = []
    for text in steps:
        if is_final(text) and any(g.capability == "conclusion" for g in gold):
            out.append(("conclusion", "tag"))
            continue
        masked = _mask(text)
        best, best_ratio = None, 0.0
        for g, m in zip(gold, masked_gold, strict=True):
            ratio = SequenceMatcher(None, masked, m).ratio()
            if ratio > best_ratio:
                best, best_ratio = g, ratio
        if best is not None and best_ratio >= ALIGN_THRESHOLD:
            out.append((best.capability, "tag"))
        else:
            out.append((classify_step(text), "rule"))
    return out


@dataclass(frozen=True)
class CapabilityStats:
    """One row of the capability table."""

    capability: str
    steps: int
    share: float
    """Share of all produced steps that use this capability."""
    mean_prm: float | None
    """Mean PRM score of its steps (steps without a score, outside slow mode, are left out)."""
    outcome_supervised: float | None
    """Share of solutions using this capability at least once that reach the right answer."""
    paths: int


def capability_stats(records: Iterable[dict[str, Any]]) -> list[CapabilityStats]:
    """Per-capability figures over per-item result records (each with ``steps[*].capability`` and ``correct``)."""
    counts = dict.fromkeys(CAPABILITIES, 0)
    scores: dict[str, list[float]] = {c: [] for c in CAPABILITIES}
    paths = dict.fromkeys(CAPABILITIES, 0)
    right = dict.fromkeys(CAPABILITIES, 0)
    total = 0
    for record in records:
        used: set[str] = set()
        for step in record.get("steps") or ():
            capability = step.get("capability")
            if capability not in counts:
                continue
            counts[capability] += 1
            total += 1
            used.add(capability)
            if step.get("score") is not None:
                scores[capability].append(float(step["score"]))
        for capability in used:
            paths[capability] += 1
            right[capability] += bool(record.get("correct"))
    return [
        CapabilityStats(
            capability=c,
            steps=counts[c],
            share=counts[c] / total if total else 0.0,
            mean_prm=sum(scores[c]) / len(scores[c]) if scores[c] else None,
            outcome_supervised=right[c] / paths[c] if paths[c] else None,
            paths=paths[c],
        )
        for c in CAPABILITIES
    ]
