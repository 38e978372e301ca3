"""Problems to annotate, read from the common JSONL/JSON layouts into one shape.

The mapping (the first record decides the format, or ``--format`` names it):

=============  ===========================================================================================
format         fields read
=============  ===========================================================================================
``sharegpt``   LLaVA / MathV360K style: ``id``, ``image``, ``conversations`` (first ``human`` turn = question,
               ``<image>`` tokens removed, options after ``Choices:`` split out; first ``gpt`` turn = the short
               solution); ``answer`` when present, else the answer the gpt turn states (its final-answer phrase
               or its last line)
``mathvista``  MathVista: ``pid``, ``question``, ``image``, ``choices``, ``answer``, ``answer_type``,
               ``precision`` (``research.eval.datasets``); ``solution`` when present
``mathverse``  MathVerse: ``sample_index``, ``question`` (inline ``Choices:``), ``image``, ``answer``
``synthetic``  this project's ``problems.jsonl`` (``atomthink data``): ``id``, ``question``, ``choices``,
               ``answer``, ``image``, ``steps`` (their texts, one per line, are the short solution)
``plain``      ``id``, ``question``, ``answer``, optional ``image``, ``choices``, ``solution``
=============  ===========================================================================================

Image paths are relative to the data file's folder (or ``image_root``). Answers are compared with
``research.eval.matching`` (rules, then math-verify).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from atomthink.steps import extract_answer, is_final
from research.eval.datasets import EvalItem, GoldStep, load_items, split_inline_choices

InputFormat = Literal["sharegpt", "mathvista", "mathverse", "synthetic", "plain"]
INPUT_FORMATS: tuple[InputFormat, ...] = ("sharegpt", "mathvista", "mathverse", "synthetic", "plain")
_IMAGE_TOKEN_RE = re.compile(r"<image>\s*")
_INT_RE = re.compile(r"^[-+]?\d+$")
_FLOAT_RE = re.compile(r"^[-+]?\d*\.(\d+)$")


def _value_type(answer: str) -> tuple[str, int | None]:
    """``integer``, ``float`` (with its decimals) or free ``text``, as ``research.eval.datasets`` types answers."""
    if _INT_RE.match(answer.strip()):
        return "integer", None
    match = _FLOAT_RE.match(answer.strip())
    return ("float", len(match.group(1))) if match else ("text", None)


@dataclass(frozen=True)
class AnnotateProblem:
    """One problem: the normalised item (question, choices, reference answer, image) and its short solution."""

    item: EvalItem
    solution: str | None = None
    """A short reference solution (the gpt turn, a dataset's solution field); the atomization mode splits it."""
    image_ref: str | None = None
    """The image path as the input file wrote it (records keep it, relative to the data file)."""

    @property
    def id(self) -> str:
        return self.item.id


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(text))
    if stripped.startswith("{") and path.suffix == ".json":
        data = json.loads(text)
        return list(data.values()) if all(isinstance(v, dict) for v in data.values()) else [data]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def detect_input_format(record: dict[str, Any]) -> InputFormat:
    if "conversations" in record:
        return "sharegpt"
    if "problem_version" in record:
        return "mathverse"
    if "pid" in record or "answer_type" in record:
        return "mathvista"
    if "steps" in record or "family" in record:
        return "synthetic"
    if "question" in record and "answer" in record:
        return "plain"
    raise ValueError(f"cannot tell the format of a record with fields {sorted(record)}; pass --format")


def load_problems(
    path: str | Path,
    fmt: InputFormat | None = None,
    *,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> list[AnnotateProblem]:
    """Read a problems file; ``limit`` keeps the first problems in file order. Ids must be unique."""
    path = Path(path)
    records = _records(path)
    if not records:
        raise ValueError(f"{path}: no records")
    fmt = fmt or detect_input_format(records[0])
    root = Path(image_root) if image_root is not None else path.parent
    if limit is not None:
        records = records[:limit]
    if fmt in ("mathvista", "mathverse", "synthetic"):
        items = load_items(path, fmt, image_root=root, limit=limit)
        problems = [
            AnnotateProblem(item, _solution(rec, item), _image_ref(rec))
            for rec, item in zip(records, items, strict=True)
        ]
    else:
        reader = _sharegpt if fmt == "sharegpt" else _plain
        problems = [reader(rec, i, root) for i, rec in enumerate(records)]
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ValueError(f"{path}: duplicate problem id {p.id!r}")
        seen.add(p.id)
    return problems


def _image_ref(record: dict[str, Any]) -> str | None:
    image = record.get("image")
    return str(image) if image else None


def _solution(record: dict[str, Any], item: EvalItem) -> str | None:
    if record.get("solution"):
        return str(record["solution"])
    if item.steps:
        return "\n".join(s.text for s in item.steps)
    return None


def _item(
    pid: str, question: str, answer: str, choices: tuple[str, ...] | None, image: Path | None, dataset: str
) -> EvalItem:
    answer_type, precision = ("choice", None) if choices else _value_type(answer)
    return EvalItem(
        dataset=dataset,
        id=pid,
        question=question,
        image=image,
        choices=choices,
        answer=answer,
        answer_type=answer_type,
        precision=precision,
    )


def _image_path(value: Any, root: Path) -> Path | None:
    if not value:
        return None
    p = Path(str(value))
    return p if p.is_absolute() else root / p


def _sharegpt(record: dict[str, Any], index: int, root: Path) -> AnnotateProblem:
    turns = record["conversations"]
    human = next(t["value"] for t in turns if t.get("from") in ("human", "user"))
    gpt = next((t["value"] for t in turns if t.get("from") in ("gpt", "assistant")), None)
    question, choices = split_inline_choices(_IMAGE_TOKEN_RE.sub("", human).strip())
    if record.get("answer") is not None:
        answer = str(record["answer"])
    elif gpt is not None:
        answer = _stated_answer(gpt)
    else:
        raise ValueError(f"sharegpt record {record.get('id', index)!r} has neither an answer nor a gpt turn")
    if choices and re.fullmatch(r"\(?[A-Z]\)?", answer.strip()):
        answer = answer.strip("() ")
    pid = str(record.get("id", index))
    item = _item(pid, question, answer, choices, _image_path(record.get("image"), root), "sharegpt")
    return AnnotateProblem(item, gpt, _image_ref(record))


def _stated_answer(solution: str) -> str:
    lines = [line for line in solution.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        if is_final(line):
            return extract_answer(line)
    return extract_answer(lines[-1])


def _plain(record: dict[str, Any], index: int, root: Path) -> AnnotateProblem:
    choices = tuple(str(c) for c in record["choices"]) if record.get("choices") else None
    pid = str(record.get("id", index))
    item = _item(
        pid, str(record["question"]), str(record["answer"]), choices, _image_path(record.get("image"), root), "plain"
    )
    steps = tuple(GoldStep(s["text"], s["capability"]) for s in record.get("steps") or ())
    if steps:
        item = EvalItem(**{**item.__dict__, "steps": steps})
    return AnnotateProblem(item, record.get("solution"), _image_ref(record))
