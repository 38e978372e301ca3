"""A seeded generator of visual math problems whose answers need reading the image.

Every problem is an image (96x96, drawn on a 6x6 grid of 16-pixel cells, one large glyph per value cell, so each
value sits exactly in one vision patch) plus a question and a small *program* of atomic steps. Running the program
gives the reference solution; running it with one injected fault gives a realistic wrong path (misread value,
arithmetic slip, wrong operation, skipped step) whose steps are labelled ``+`` up to the first step that shows a
wrong value and ``-`` from there on (the "can this prefix still reach the right answer" convention of
Math-Shepherd).

Families (each 3 to 8 atomic steps):

* ``bars``: a bar chart (3 or 4 bars, labels A-D, value printed above each bar): sum of two bars, how much taller
  one bar is than another, total of all bars.
* ``shapes``: a rectangle with its width and height written on its sides (area, perimeter) or a triangle with its
  three sides (perimeter); some are multiple choice.
* ``prices``: a price table (pen, mug, hat, box): cost of a basket, price difference, change from a payment.

Calculation steps restate their operands ("2 × 4 = 8") so a text-only PRM can check them against the question and the
earlier steps; a misread value is only detectable from the image (see the model card for what that means for the
PRM).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw, ImageFont

CAPABILITIES = (
    "image_recognition",
    "variable_definition",
    "calculation",
    "rule_application",
    "conclusion",
)
FAMILIES = ("bars", "shapes", "prices")
CORRUPTIONS = ("misread", "slip", "wrong_op", "skip", "operand")

IMAGE_SIZE = 96
CELL = 16
GRID = IMAGE_SIZE // CELL
FINAL_TEMPLATE = "To sum up, the final answer is: {v}"

ITEMS = ("pen", "mug", "hat", "box")
PLURALS = {"pen": "pens", "mug": "mugs", "hat": "hats", "box": "boxes"}


# ---------------------------------------------------------------------------------------------------------------
# The step program


@dataclass(frozen=True)
class Read:
    key: str
    template: str  # field {v}


@dataclass(frozen=True)
class Text:
    text: str
    capability: str


@dataclass(frozen=True)
class Calc:
    out: str
    op: str  # "+", "-", "×"
    a: str | int
    b: str | int
    template: str = "{a} {op} {b} = {r}"


@dataclass(frozen=True)
class Final:
    var: str


Op = Read | Text | Calc | Final


@dataclass(frozen=True)
class Step:
    text: str
    capability: str


@dataclass
class Problem:
    id: str
    family: str
    qtype: str
    question: str
    values: dict[str, int]
    program: list[Op]
    choices: list[str] | None
    cells: str
    """GRID*GRID characters, row-major: the glyph drawn in each cell (space when none); the perception target."""
    roles: str
    """GRID*GRID characters: for each value cell, the letter that names the value in the steps (bar label, side
    letter, item initial), space elsewhere; the perception stage binds it to the cell."""
    draw: Callable[[], Image.Image] = field(repr=False)

    @property
    def value_answer(self) -> int:
        return run_program(self.program, self.values)[1]

    @property
    def answer(self) -> str:
        """The reference answer as ``extract_answer`` returns it: the option letter with choices, else the value."""
        v = str(self.value_answer)
        if self.choices:
            return chr(ord("A") + self.choices.index(v))
        return v

    @property
    def steps(self) -> list[Step]:
        return run_program(self.program, self.values)[0]


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "×":
        return a * b
    raise ValueError(op)


def _execute(
    program: list[Op], values: dict[str, int], fault: dict[str, Any] | None = None
) -> tuple[list[Step], list[tuple[int, ...]], list[int], int]:
    """Run a program; returns steps, the values each step shows, the op index of each step, the final value."""
    fault = fault or {}
    env: dict[str, int] = {}
    env.update(values)
    if fault.get("kind") == "misread":
        env[fault["key"]] = fault["value"]
    steps: list[Step] = []
    shown: list[tuple[int, ...]] = []
    origin: list[int] = []
    final_value = 0

    def val(x: str | int) -> int:
        return x if isinstance(x, int) else env[x]

    for i, op in enumerate(program):
        if isinstance(op, Read):
            v = env[op.key]
            steps.append(Step(op.template.format(v=v), "image_recognition"))
            shown.append((v,))
        elif isinstance(op, Text):
            steps.append(Step(op.text, op.capability))
            shown.append(())
        elif isinstance(op, Calc):
            a, b = val(op.a), val(op.b)
            if fault.get("kind") == "operand" and fault["index"] == i:
                if fault["which"] == "a":
                    a = fault["value"]
                else:
                    b = fault["value"]
            if fault.get("kind") == "skip" and fault["index"] == i:
                env[op.out] = a if isinstance(op.a, str) else b  # the operation is forgotten
                continue
            kind = op.op
            if fault.get("kind") == "wrong_op" and fault["index"] == i:
                kind = fault["op"]
            r = _apply(kind, a, b)
            if fault.get("kind") == "slip" and fault["index"] == i:
                r += fault["delta"]
            env[op.out] = r
            steps.append(Step(op.template.format(a=a, b=b, r=r, op=kind), "calculation"))
            shown.append((a, b, r))
        elif isinstance(op, Final):
            final_value = env[op.var]
            steps.append(Step(FINAL_TEMPLATE.format(v=final_value), "conclusion"))
            shown.append((final_value,))
        else:  # pragma: no cover
            raise TypeError(op)
        origin.append(i)
    return steps, shown, origin, final_value


def _operand_value(program: list[Op], values: dict[str, int], index: int, which: str) -> int:
    env = dict(values)
    for op in program[:index]:
        if isinstance(op, Calc):
            a = op.a if isinstance(op.a, int) else env[op.a]
            b = op.b if isinstance(op.b, int) else env[op.b]
            env[op.out] = _apply(op.op, a, b)
    op = program[index]
    assert isinstance(op, Calc)
    x = op.a if which == "a" else op.b
    return x if isinstance(x, int) else env[x]


def run_program(program: list[Op], values: dict[str, int]) -> tuple[list[Step], int]:
    steps, _, _, final = _execute(program, values)
    return steps, final


def corrupt(problem: Problem, kind: str, rng: random.Random) -> tuple[list[Step], list[str]] | None:
    """A wrong path of one corruption kind and its per-step labels, or ``None`` when this problem has no such fault."""
    program, values = problem.program, problem.values
    true_steps, true_shown, true_origin, true_final = _execute(program, values)
    by_origin = dict(zip(true_origin, true_shown, strict=True))
    calcs = [i for i, op in enumerate(program) if isinstance(op, Calc)]
    fault: dict[str, Any]
    if kind == "misread":
        keys = [op.key for op in program if isinstance(op, Read)]
        key = rng.choice(keys)
        wrong = [v for v in range(1, 10) if v != values[key] and abs(v - values[key]) <= 3]
        fault = {"kind": kind, "key": key, "value": rng.choice(wrong)}
    elif kind == "slip":
        fault = {"kind": kind, "index": rng.choice(calcs), "delta": rng.choice([-2, -1, 1, 1, 2, 10, -10])}
    elif kind == "wrong_op":
        i = rng.choice(calcs)
        others = {"+": ["-", "×"], "-": ["+"], "×": ["+"]}[program[i].op]  # type: ignore[union-attr]
        fault = {"kind": kind, "index": i, "op": rng.choice(others)}
    elif kind == "skip":
        fault = {"kind": kind, "index": rng.choice(calcs)}
    elif kind == "operand":  # an operand copied wrongly from an earlier step; the arithmetic itself is right
        i = rng.choice(calcs)
        op = program[i]
        assert isinstance(op, Calc)
        which = rng.choice([w for w, x in (("a", op.a), ("b", op.b)) if isinstance(x, str)])
        env_value = _operand_value(program, values, i, which)
        wrong = [v for v in range(max(1, env_value - 3), env_value + 4) if v != env_value]
        fault = {"kind": kind, "index": i, "which": which, "value": rng.choice(wrong)}
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    try:
        steps, shown, origin, final = _execute(program, values, fault)
    except KeyError:
        return None
    if final == true_final or final < 0 or any(x < 0 for s in shown for x in s):
        return None
    labels: list[str] = []
    bad = False
    for sh, o in zip(shown, origin, strict=True):
        if sh != by_origin.get(o):
            bad = True
        labels.append("-" if bad else "+")
    if "-" not in labels:
        return None
    return steps, labels


# ---------------------------------------------------------------------------------------------------------------
# Rendering


_FONT: Any = None
_SMALL: Any = None


def _fonts() -> tuple[Any, Any]:
    global _FONT, _SMALL
    if _FONT is None:
        _FONT = ImageFont.load_default(size=15)
        _SMALL = ImageFont.load_default(size=11)
    return _FONT, _SMALL


class _Canvas:
    def __init__(self) -> None:
        self.image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.cells = [" "] * (GRID * GRID)
        self.roles = [" "] * (GRID * GRID)

    def glyph(self, row: int, col: int, ch: str, role: str = " ") -> None:
        font, _ = _fonts()
        self.draw.text((col * CELL + CELL / 2, row * CELL + CELL / 2 + 1), ch, fill="black", font=font, anchor="mm")
        self.cells[row * GRID + col] = ch
        self.roles[row * GRID + col] = role


def _cells_and_painter(paint: Callable[[_Canvas], None]) -> tuple[str, str, Callable[[], Image.Image]]:
    canvas = _Canvas()
    paint(canvas)
    cells = "".join(canvas.cells)
    roles = "".join(canvas.roles)

    def draw() -> Image.Image:
        c = _Canvas()
        paint(c)
        return c.image

    return cells, roles, draw


BAR_COLORS = ("#4472c4", "#ed7d31", "#70ad47", "#7f7f7f", "#5b9bd5")


def _paint_bars(values: list[int], color: str) -> Callable[[_Canvas], None]:
    def paint(c: _Canvas) -> None:
        c.draw.line([(6, 80), (90, 80)], fill="black", width=1)
        for j, v in enumerate(values):
            col = j + 1
            x0 = col * CELL + 3
            c.draw.rectangle([x0, 80 - v * 7, x0 + 10, 80], fill=color)
            c.glyph(0, col, str(v), "ABCD"[j])
            c.glyph(5, col, "ABCD"[j])

    return paint


def _paint_rect(w: int, h: int) -> Callable[[_Canvas], None]:
    def paint(c: _Canvas) -> None:
        c.draw.rectangle([20, 20, 88, 84], outline="black", width=2)
        c.glyph(0, 3, str(w), "w")
        c.glyph(3, 0, str(h), "h")

    return paint


def _paint_triangle(a: int, b: int, s: int) -> Callable[[_Canvas], None]:
    def paint(c: _Canvas) -> None:
        c.draw.polygon([(48, 10), (18, 76), (78, 76)], outline="black", width=2)
        c.glyph(2, 0, str(a), "a")
        c.glyph(2, 5, str(b), "b")
        c.glyph(5, 3, str(s), "c")

    return paint


def _paint_table(prices: list[int]) -> Callable[[_Canvas], None]:
    def paint(c: _Canvas) -> None:
        _, small = _fonts()
        c.draw.rectangle([0, 0, 95, 95], fill="#f2f2f2")
        c.draw.rectangle([0, 0, 95, 15], fill="#d9d9d9")
        c.draw.text((4, 8), "item", fill="black", font=small, anchor="lm")
        c.draw.text((72, 8), "$", fill="black", font=small, anchor="mm")
        for r in range(1, 6):
            c.draw.line([(0, r * CELL), (95, r * CELL)], fill="#999999")
        c.draw.line([(62, 0), (62, 80)], fill="#999999")
        for i, (item, p) in enumerate(zip(ITEMS, prices, strict=True)):
            c.draw.text((4, (i + 1) * CELL + 8), item, fill="black", font=small, anchor="lm")
            c.glyph(i + 1, 4, str(p), item[0])

    return paint


# ---------------------------------------------------------------------------------------------------------------
# Families


def _choices(answer: int, rng: random.Random) -> list[str]:
    pool = [answer + d for d in (-3, -2, -1, 1, 2, 3, 4) if answer + d > 0]
    options = [answer, *rng.sample(pool, 3)]
    rng.shuffle(options)
    return [str(o) for o in options]


def _bars(rng: random.Random) -> dict[str, Any]:
    n = rng.choice([3, 4])
    labels = "ABCD"[:n]
    qtype = rng.choice(["sum", "diff", "total"])
    vals = rng.sample(range(1, 10), n) if qtype == "diff" else [rng.randint(1, 9) for _ in range(n)]
    values = {k: v for k, v in zip(labels, vals, strict=True)}
    program: list[Op]
    if qtype == "sum":
        x, y = sorted(rng.sample(labels, 2))
        question = f"What is the sum of bars {x} and {y}?"
        program = [Read(x, f"Bar {x} is {{v}}."), Read(y, f"Bar {y} is {{v}}."), Calc("s", "+", x, y), Final("s")]
    elif qtype == "diff":
        x, y = rng.sample(labels, 2)
        if values[x] < values[y]:
            x, y = y, x
        question = f"How much taller is bar {x} than bar {y}?"
        program = [Read(x, f"Bar {x} is {{v}}."), Read(y, f"Bar {y} is {{v}}."), Calc("d", "-", x, y), Final("d")]
    else:
        question = "What is the total of all bars?"
        program = [Read(k, f"Bar {k} is {{v}}.") for k in labels]
        acc: str = labels[0]
        for j, k in enumerate(labels[1:]):
            program.append(Calc(f"t{j}", "+", acc, k))
            acc = f"t{j}"
        program.append(Final(acc))
    paint = _paint_bars(vals, rng.choice(BAR_COLORS))
    return {"qtype": qtype, "question": question, "values": values, "program": program, "paint": paint}


def _shapes(rng: random.Random) -> dict[str, Any]:
    qtype = rng.choice(["rect_area", "rect_perimeter", "triangle_perimeter"])
    program: list[Op]
    if qtype.startswith("rect"):
        w, h = rng.randint(2, 9), rng.randint(1, 9)
        values = {"w": w, "h": h}
        reads: list[Op] = [Read("w", "Width w = {v}."), Read("h", "Height h = {v}.")]
        if qtype == "rect_area":
            question = "What is the area of the rectangle?"
            program = [*reads, Text("Area = w × h.", "rule_application"), Calc("A", "×", "w", "h"), Final("A")]
        else:
            question = "What is the perimeter of the rectangle?"
            program = [
                *reads,
                Text("Perimeter = 2 × (w + h).", "rule_application"),
                Calc("s", "+", "w", "h"),
                Calc("P", "×", 2, "s"),
                Final("P"),
            ]
        paint = _paint_rect(w, h)
    else:
        a, b, s = (rng.randint(2, 9) for _ in range(3))
        values = {"a": a, "b": b, "c": s}
        question = "What is the perimeter of the triangle?"
        program = [
            Text("Let a, b, c be the three sides.", "variable_definition"),
            Read("a", "Side a = {v}."),
            Read("b", "Side b = {v}."),
            Read("c", "Side c = {v}."),
            Text("Perimeter = a + b + c.", "rule_application"),
            Calc("s", "+", "a", "b"),
            Calc("P", "+", "s", "c"),
            Final("P"),
        ]
        paint = _paint_triangle(a, b, s)
    return {"qtype": qtype, "question": question, "values": values, "program": program, "paint": paint}


def _prices(rng: random.Random) -> dict[str, Any]:
    qtype = rng.choice(["basket", "more", "change"])
    prices = rng.sample(range(1, 10), 4) if qtype == "more" else [rng.randint(1, 9) for _ in range(4)]
    values = dict(zip(ITEMS, prices, strict=True))
    program: list[Op]
    if qtype == "basket":
        i1, i2 = rng.sample(ITEMS, 2)
        n1, n2 = rng.randint(2, 3), rng.randint(2, 3)
        question = f"How much do {n1} {PLURALS[i1]} and {n2} {PLURALS[i2]} cost?"
        program = [
            Read(i1, f"A {i1} costs {{v}}."),
            Read(i2, f"A {i2} costs {{v}}."),
            Text("Let t be the total cost.", "variable_definition"),
            Calc("c1", "×", n1, i1),
            Calc("c2", "×", n2, i2),
            Calc("t", "+", "c1", "c2", "t = {a} {op} {b} = {r}"),
            Final("t"),
        ]
    elif qtype == "more":
        i1, i2 = rng.sample(ITEMS, 2)
        if values[i1] < values[i2]:
            i1, i2 = i2, i1
        question = f"How much more does a {i1} cost than a {i2}?"
        program = [
            Read(i1, f"A {i1} costs {{v}}."),
            Read(i2, f"A {i2} costs {{v}}."),
            Calc("d", "-", i1, i2),
            Final("d"),
        ]
    else:
        item = rng.choice(ITEMS)
        n = rng.randint(2, 3)
        pay = rng.choice([p for p in (20, 30) if p > n * values[item]])
        question = f"You pay {pay} for {n} {PLURALS[item]}. What is the change?"
        program = [
            Read(item, f"A {item} costs {{v}}."),
            Calc("c", "×", n, item),
            Calc("r", "-", pay, "c"),
            Final("r"),
        ]
    return {"qtype": qtype, "question": question, "values": values, "program": program, "paint": _paint_table(prices)}


_FAMILY_FNS = {"bars": _bars, "shapes": _shapes, "prices": _prices}


def make_problem(seed: int, index: int, family: str | None = None) -> Problem:
    """Problem ``index`` of the stream ``seed``: the same pair always gives the same problem."""
    rng = random.Random(f"atomthink-data/{seed}/{index}")
    family = family or FAMILIES[rng.randrange(len(FAMILIES))]
    spec = _FAMILY_FNS[family](rng)
    _, answer = run_program(spec["program"], spec["values"])
    choices = _choices(answer, rng) if family == "shapes" and rng.random() < 0.3 else None
    cells, roles, draw = _cells_and_painter(spec["paint"])
    return Problem(
        id=f"s{seed}-{index:06d}",
        family=family,
        qtype=spec["qtype"],
        question=spec["question"],
        values=spec["values"],
        program=spec["program"],
        choices=choices,
        cells=cells,
        roles=roles,
        draw=draw,
    )


READ_ALL_QUESTION = "Read every value in the image."


def reading_steps(p: Problem, rng: random.Random) -> list[str]:
    """One reading step per value drawn in the image, in a random order (the dense perception records)."""
    if p.family == "bars":
        texts = [f"Bar {k} is {v}." for k, v in p.values.items()]
    elif p.family == "prices":
        texts = [f"A {k} costs {v}." for k, v in p.values.items()]
    elif p.qtype.startswith("rect"):
        texts = [f"Width w = {p.values['w']}.", f"Height h = {p.values['h']}."]
    else:
        texts = [f"Side {k} = {v}." for k, v in p.values.items()]
    rng.shuffle(texts)
    return texts


def recompute_answer(family: str, qtype: str, question: str, values: dict[str, int]) -> int:
    """The answer from the question and the drawn values, computed independently of the step program."""
    if family == "bars":
        if qtype == "total":
            return sum(values.values())
        x, y = re.findall(r"\b([A-D])\b", question)
        return values[x] + values[y] if qtype == "sum" else values[x] - values[y]
    if family == "shapes":
        if qtype == "rect_area":
            return values["w"] * values["h"]
        if qtype == "rect_perimeter":
            return 2 * (values["w"] + values["h"])
        return values["a"] + values["b"] + values["c"]
    if qtype == "basket":
        m = re.match(r"How much do (\d) (\w+) and (\d) (\w+) cost\?", question)
        assert m
        singular = {v: k for k, v in PLURALS.items()}
        return int(m[1]) * values[singular[m[2]]] + int(m[3]) * values[singular[m[4]]]
    if qtype == "more":
        m = re.match(r"How much more does a (\w+) cost than a (\w+)\?", question)
        assert m
        return values[m[1]] - values[m[2]]
    m = re.match(r"You pay (\d+) for (\d) (\w+)\.", question)
    assert m
    singular = {v: k for k, v in PLURALS.items()}
    return int(m[1]) - int(m[2]) * values[singular[m[3]]]


def arithmetic_facts() -> list[tuple[int, str, int, int]]:
    """Every ``(a, op, b, a op b)`` in the range the families' calculation steps use (a superset of them).

    Sums up to 30 + 30 (totals, baskets), differences of numbers up to 30 (change from 20 or 30), products of a
    factor 1-9 by 1-19 (areas, baskets, doubling a half-perimeter). The policy's calculation drill draws from it.
    """
    facts: list[tuple[int, str, int, int]] = []
    for a in range(31):
        for b in range(31):
            facts.append((a, "+", b, a + b))
            if b <= a:
                facts.append((a, "-", b, a - b))
    for a in range(1, 10):
        for b in range(1, 20):
            facts.append((a, "×", b, a * b))
    return facts


_CALCULATION = re.compile(r"(\d+) ([+\-×]) (\d+) = (\d+)$")


def arithmetic_is_right(step: str) -> bool | None:
    """Whether a calculation step's ``a op b = r`` holds, ``None`` for a step that ends in no such line."""
    m = _CALCULATION.search(step)
    if m is None:
        return None
    a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
    return {"+": a + b, "-": a - b, "×": a * b}[op] == r


def generate_dataset(seed: int, n: int) -> list[Problem]:
    return [make_problem(seed, i) for i in range(n)]
