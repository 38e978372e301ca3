"""Evaluation items from local files: the project's synthetic JSONL, MathVista testmini and MathVerse testmini.

Each reader turns one file into :class:`EvalItem` records; nothing is downloaded. Image paths are taken relative to
the folder of the data file (or ``image_root`` when given) unless they are absolute.

* synthetic (``atomthink data``): JSONL ``{"id", "image", "question", "choices", "answer", "steps": [{"text",
  "capability"}], "family", ...}``; the answer is the option letter when there are choices.
* MathVista testmini (``testmini.json``): a JSON object keyed by ``pid`` (a list or JSONL of the same records is
  accepted), each with ``question``, ``image``, ``choices``, ``answer`` (the option *text* for multiple choice),
  ``answer_type`` (integer, float, text, list), ``precision``, ``question_type`` and ``metadata.category``
  (``general-vqa`` or ``math-targeted-vqa``, the paper's *General* and *Math* columns).
* MathVerse testmini (``testmini.json``): a JSON list with ``sample_index``, ``problem_index``, ``problem_version``
  (Text Dominant, Text Lite, Vision Intensive, Vision Dominant, Vision Only), ``question`` (multiple-choice options
  inline after ``Choices:``), ``image``, ``answer`` (the option letter or a value, often LaTeX), ``question_type``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DatasetFormat = Literal["synthetic", "mathvista", "mathverse"]
FORMATS: tuple[DatasetFormat, ...] = ("synthetic", "mathvista", "mathverse")

MATHVERSE_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")
MATHVISTA_SPLITS = {"general-vqa": "General", "math-targeted-vqa": "Math"}
VISION_ONLY_QUESTION = "Answer the question shown in the image."
"""MathVerse *Vision Only* items have an empty question; the service needs one, so this stands in for it."""

_CHOICES_RE = re.compile(r"\n\s*Choices:\s*\n(?P<block>(?:\s*\(?[A-Z]\)?\s*[:.)]\s*.*(?:\n|$))+)\s*$")
_OPTION_RE = re.compile(r"^\s*\(?([A-Z])\)?\s*[:.)]\s*(.*?)\s*$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_FLOAT_RE = re.compile(r"^[-+]?\d*\.(\d+)$")


@dataclass(frozen=True)
class GoldStep:
    """A reference step of a synthetic item and the capability it uses."""

    text: str
    capability: str


@dataclass(frozen=True)
class EvalItem:
    """One problem, normalised across formats."""

    dataset: str
    """Label of the data file in the tables (``synthetic``, ``mathvista``, ``mathverse``)."""
    id: str
    question: str
    image: Path | None
    choices: tuple[str, ...] | None
    answer: str
    """The gold answer as the file states it."""
    answer_type: str
    """``choice``, ``integer``, ``float``, ``list`` or ``text`` (free form: numbers, fractions, LaTeX, words)."""
    precision: int | None = None
    """Decimals a ``float`` answer is compared at."""
    split: str = "all"
    """Column of the modes table: synthetic family, MathVista General/Math, MathVerse problem version."""
    steps: tuple[GoldStep, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.id}"

    @property
    def gold_letter(self) -> str | None:
        """The correct option letter of a multiple-choice item (the answer may be the letter or the option text)."""
        if self.answer_type != "choice":
            return None
        if not self.choices:
            return self.answer.strip().upper() if re.fullmatch(r"[A-Za-z]", self.answer.strip()) else None
        letters = [chr(ord("A") + i) for i in range(len(self.choices))]
        answer = self.answer.strip()
        if answer in letters:
            return answer
        for letter, choice in zip(letters, self.choices, strict=True):
            if answer == choice.strip():
                return letter
        for letter, choice in zip(letters, self.choices, strict=True):
            if answer.lower() == choice.strip().lower():
                return letter
        return None


def detect_format(path: Path) -> DatasetFormat:
    """Guess the format of a data file from its first record."""
    first = next(iter(_records(path)), None)
    if first is None:
        raise ValueError(f"{path}: no records")
    if "problem_version" in first:
        return "mathverse"
    if "pid" in first or "answer_type" in first:
        return "mathvista"
    if "steps" in first or "family" in first:
        return "synthetic"
    raise ValueError(f"{path}: cannot tell the format; pass it explicitly (one of {', '.join(FORMATS)})")


def load_items(
    path: str | Path,
    fmt: DatasetFormat | None = None,
    *,
    label: str | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> list[EvalItem]:
    """Read one data file; ``limit`` keeps the first items (in file order)."""
    path = resolve_data_file(path)
    fmt = fmt or detect_format(path)
    root = Path(image_root) if image_root is not None else path.parent
    reader = {"synthetic": _synthetic, "mathvista": _mathvista, "mathverse": _mathverse}[fmt]
    items: list[EvalItem] = []
    for record in _records(path):
        items.append(reader(record, label or fmt, root))
        if limit is not None and len(items) >= limit:
            break
    return items


def resolve_data_file(path: str | Path) -> Path:
    """A data file, or the ``problems.jsonl`` / ``testmini.json`` inside a folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("problems.jsonl", "testmini.json"):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no problems.jsonl or testmini.json")


def _records(path: Path) -> Iterable[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(text)
    elif stripped.startswith("{") and path.suffix == ".json":
        data = json.loads(text)
        yield from (data.values() if all(isinstance(v, dict) for v in data.values()) else [data])
    else:
        for line in text.splitlines():
            if line.strip():
                yield json.loads(line)


def _image(value: Any, root: Path) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else root / path


def _value_type(answer: str) -> tuple[str, int | None]:
    if _INT_RE.match(answer):
        return "integer", None
    match = _FLOAT_RE.match(answer)
    if match:
        return "float", len(match.group(1))
    return "text", None


def _synthetic(record: dict[str, Any], label: str, root: Path) -> EvalItem:
    choices = tuple(record["choices"]) if record.get("choices") else None
    answer = str(record["answer"])
    answer_type, precision = ("choice", None) if choices else _value_type(answer)
    return EvalItem(
        dataset=label,
        id=str(record["id"]),
        question=record["question"],
        image=_image(record.get("image"), root),
        choices=choices,
        answer=answer,
        answer_type=answer_type,
        precision=precision,
        split=str(record.get("family") or "all"),
        steps=tuple(GoldStep(s["text"], s["capability"]) for s in record.get("steps") or ()),
        metadata={k: record[k] for k in ("family", "qtype") if k in record},
    )


def _mathvista(record: dict[str, Any], label: str, root: Path) -> EvalItem:
    choices = tuple(str(c) for c in record["choices"]) if record.get("choices") else None
    metadata = dict(record.get("metadata") or {})
    precision = record.get("precision")
    answer_type = "choice" if record.get("question_type") == "multi_choice" and choices else record["answer_type"]
    return EvalItem(
        dataset=label,
        id=str(record["pid"]),
        question=record["question"],
        image=_image(record.get("image"), root),
        choices=choices,
        answer=str(record["answer"]),
        answer_type=answer_type,
        precision=int(precision) if precision is not None else None,
        split=MATHVISTA_SPLITS.get(str(metadata.get("category")), "Other"),
        metadata={**metadata, "unit": record.get("unit"), "question_type": record.get("question_type")},
    )


def split_inline_choices(question: str) -> tuple[str, tuple[str, ...] | None]:
    """MathVerse writes options into the question (``...\\nChoices:\\nA:40°\\nB:60°``): take them out."""
    match = _CHOICES_RE.search(question)
    if match is None:
        return question, None
    options = []
    for line in match.group("block").splitlines():
        option = _OPTION_RE.match(line)
        if option:
            options.append(option.group(2))
    return question[: match.start()].rstrip(), tuple(options) or None


def _mathverse(record: dict[str, Any], label: str, root: Path) -> EvalItem:
    question, choices = split_inline_choices(record.get("question") or "")
    answer = str(record["answer"])
    multi = record.get("question_type") == "multi-choice"
    # Vision Only (and some Vision Dominant) items show the options in the image alone: choice, no choices.
    answer_type, precision = ("choice", None) if multi else _value_type(answer)
    return EvalItem(
        dataset=label,
        id=str(record["sample_index"]),
        question=question.strip() or VISION_ONLY_QUESTION,
        image=_image(record.get("image"), root),
        choices=choices if multi else None,
        answer=answer,
        answer_type=answer_type,
        precision=precision,
        split=str(record.get("problem_version") or "all"),
        metadata={**(record.get("metadata") or {}), "problem_index": record.get("problem_index")},
    )
