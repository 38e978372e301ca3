"""Corrupted negatives for PRM data, the kinds AtomThink's data engine makes: a correct path with one step replaced
by a factual, calculation or logic error, or by an empty or a repeated step.

These work on free text (any annotated path, not only the synthetic programs of ``research.data``): a rule finds
what can be corrupted in the chosen step and changes it; a kind that finds nothing in any step yields no record, so
every negative really differs from its source. The record keeps the steps before the corrupted one (``+``) and the
corrupted step (``-``); the rest of the path is cut, so no label has to guess whether later steps still hold.

* ``calculation``: an ``a op b = r`` whose result ``r`` is changed (or, failing that, the last number of a step
  that computes something);
* ``factual``: a number the step shares with the question replaced by another (a misread value or fact);
* ``logic``: an operator or a relation turned into its opposite (``+``/``-``, ``×``/``÷``, ``<``/``>``,
  greater/less, increase/decrease, parallel/perpendicular, ...);
* ``empty``: the step's text removed;
* ``repeated``: the step replaced by a copy of the step before it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

KINDS = ("factual", "calculation", "logic", "empty", "repeated")

_NUMBER = r"-?\d+(?:\.\d+)?"
_EQUATION_RE = re.compile(rf"({_NUMBER})\s*([-+*/×÷x])\s*({_NUMBER})\s*=\s*({_NUMBER})")
_NUMBER_RE = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w.])")
_FINAL_RE = re.compile(r"final answer|the answer is", re.IGNORECASE)
_OPPOSITES = [
    (" + ", " - "),
    (" × ", " ÷ "),
    (" * ", " / "),
    (" < ", " > "),
    (" ≤ ", " ≥ "),
    ("greater", "less"),
    ("larger", "smaller"),
    ("more", "fewer"),
    ("increase", "decrease"),
    ("add", "subtract"),
    ("maximum", "minimum"),
    ("parallel", "perpendicular"),
    ("left", "right"),
    ("above", "below"),
    ("true", "false"),
]


@dataclass(frozen=True)
class Negative:
    kind: str
    steps: list[str]
    """The steps before the corrupted one, then the corrupted step."""
    labels: list[str]


def _format_like(value: float, like: str) -> str:
    if "." in like:
        return f"{value:.{len(like.split('.')[1])}f}"
    return str(int(value))


def _other_number(text: str, rng: random.Random) -> str:
    value = float(text)
    delta = rng.choice([-3, -2, -1, 1, 2, 3]) * (10 ** (len(text.split(".")[1]) * -1) if "." in text else 1)
    if value + delta == value:
        delta = 1
    return _format_like(value + delta, text)


def calculation_error(step: str, question: str, rng: random.Random) -> str | None:
    match = _EQUATION_RE.search(step)
    if match is not None:
        start, end = match.span(4)
        return step[:start] + _other_number(match.group(4), rng) + step[end:]
    if "=" in step or _FINAL_RE.search(step):
        numbers = list(_NUMBER_RE.finditer(step))
        if numbers:
            last = numbers[-1]
            return step[: last.start()] + _other_number(last.group(), rng) + step[last.end() :]
    return None


def factual_error(step: str, question: str, rng: random.Random) -> str | None:
    given = {m.group() for m in _NUMBER_RE.finditer(question)}
    shared = [m for m in _NUMBER_RE.finditer(step) if m.group() in given]
    if not shared:
        return None
    pick = rng.choice(shared)
    return step[: pick.start()] + _other_number(pick.group(), rng) + step[pick.end() :]


def logic_error(step: str, question: str, rng: random.Random) -> str | None:
    options = []
    for a, b in _OPPOSITES:
        for src, dst in ((a, b), (b, a)):
            for m in re.finditer(re.escape(src) if not src[0].isalpha() else rf"\b{src}\b", step):
                options.append((m.start(), m.end(), dst))
    if not options:
        return None
    start, end, dst = rng.choice(options)
    return step[:start] + dst + step[end:]


_RULES: dict[str, Callable[[str, str, random.Random], str | None]] = {
    "calculation": calculation_error,
    "factual": factual_error,
    "logic": logic_error,
}


def corrupt_step(kind: str, steps: Sequence[str], k: int, question: str, rng: random.Random) -> str | None:
    """Step ``k`` of ``steps`` corrupted by ``kind``, or ``None`` when that kind cannot apply there."""
    if kind == "empty":
        return "" if steps[k].strip() else None
    if kind == "repeated":
        return steps[k - 1] if k > 0 and steps[k - 1].strip() != steps[k].strip() else None
    try:
        rule = _RULES[kind]
    except KeyError:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(KINDS)}") from None
    out = rule(steps[k], question, rng)
    return out if out is not None and out != steps[k] else None


def negatives(
    question: str, steps: Sequence[str], rng: random.Random, kinds: Sequence[str] = KINDS, per_kind: int = 1
) -> Iterator[Negative]:
    """Up to ``per_kind`` negatives of each kind from one correct path (steps drawn at random among those the kind
    applies to)."""
    for kind in kinds:
        places = list(range(len(steps)))
        rng.shuffle(places)
        made = 0
        for k in places:
            if made >= per_kind:
                break
            bad = corrupt_step(kind, steps, k, question, rng)
            if bad is None:
                continue
            made += 1
            yield Negative(kind, [*steps[:k], bad], ["+"] * k + ["-"])


def write_negatives(
    data: str, out: str, kinds: Sequence[str], per_kind: int, prm_preset: str = "math-psa", seed: int = 0
) -> dict[str, object]:
    """Negatives of every all-``+`` path of a PRM-layout JSONL, written as PRM records with their ``corruption``."""
    import json
    from collections import Counter
    from pathlib import Path

    from atomthink.prm_format import get_prm_preset
    from research.data.records import read_jsonl
    from research.training.step_judge import split_steps

    tag = get_prm_preset(prm_preset).step_tag
    rng = random.Random(seed)
    made: Counter[str] = Counter()
    sources = 0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for record in read_jsonl(Path(data)):
            if "-" in record["label"]:
                continue
            sources += 1
            steps = split_steps(record["process"], tag)
            for k, negative in enumerate(negatives(record["question"], steps, rng, kinds, per_kind)):
                made[negative.kind] += 1
                extra = {key: record[key] for key in ("image", "answer") if key in record}
                f.write(json.dumps({"id": f"{record.get('id', sources)}-n{k}", "question": record["question"],
                                    "process": "".join(s + tag for s in negative.steps), "label": negative.labels,
                                    "corruption": negative.kind, **extra}) + "\n")  # fmt: skip
    return {"source_paths": sources, "negatives": sum(made.values()), "by_kind": dict(made)}
