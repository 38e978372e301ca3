"""Reading model replies into nodes and paths, tolerantly; a reply that cannot be used gets a reason, never an error.

JSON is taken strictly first, then from a fenced code block, then from the first balanced ``{...}`` object in the
text (models often wrap JSON in prose); action names are read case-insensitively with a few synonyms
(``final_answer``/``final``/``answer`` -> ``conclude``, ``check`` -> ``verify``). Every step must pass the project's
step rules (``atomthink.steps.invalid_reason``: not empty, not several steps in one, not repeating itself, not a
copy of the previous step). A step that states the final answer ("To sum up, the final answer is: ...") concludes
whatever action was named.

Reasons are short fixed strings (``not_json``, ``missing_content``, ``bad_action``, ``invalid_step:empty``...) so
the quality report can count them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atomthink.steps import extract_answer, invalid_reason, is_final
from research.annotate.prompts import Action

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_SYNONYMS: dict[str, Action] = {
    "continue": "continue",
    "continue_reasoning": "continue",
    "reason": "continue",
    "next": "continue",
    "verify": "verify",
    "verification": "verify",
    "check": "verify",
    "conclude": "conclude",
    "conclusion": "conclude",
    "final_answer": "conclude",
    "final": "conclude",
    "answer": "conclude",
    "stop": "conclude",
}
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class Node:
    """One node of a dynamic-prompting path."""

    content: str
    action: Action
    previous_stage: str | None = None
    current_state: str | None = None
    answer: str | None = None
    """The stated final answer (``conclude`` only)."""

    @property
    def next_action(self) -> str:
        """The official annotation field: ``final_answer`` for a concluding node, else ``continue``."""
        return "final_answer" if self.action == "conclude" else "continue"


@dataclass(frozen=True)
class Unusable:
    """A reply that gives no usable node or path, and why."""

    reason: str
    excerpt: str


def excerpt(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def load_json_object(text: str) -> dict[str, Any] | Unusable:
    """The JSON object a reply holds: the whole text, a fenced block, or the first balanced object in it."""
    stripped = text.strip()
    if not stripped:
        return Unusable("empty_reply", "")
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE_RE.finditer(stripped))]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
        return Unusable("not_an_object", excerpt(text))
    for start in (i for i, ch in enumerate(stripped) if ch == "{"):
        try:
            value, _ = decoder.raw_decode(stripped[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return Unusable("not_json", excerpt(text))


def read_action(value: Any) -> Action | None:
    if not isinstance(value, str):
        return None
    return _SYNONYMS.get(value.strip().lower().replace(" ", "_").replace("-", "_"))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else None


def _step(content: str, previous: str | None) -> Unusable | None:
    why = invalid_reason(content, previous)
    return Unusable(f"invalid_step:{why.replace(' ', '_')}", excerpt(content)) if why else None


def _conclusion_answer(content: str, answer: str | None, choices: Sequence[str] | None) -> str | None:
    if answer:
        return answer
    if is_final(content):
        stated = extract_answer(content, choices)
        return stated or None
    return None


def parse_node(text: str | None, previous: str | None = None, choices: Sequence[str] | None = None) -> Node | Unusable:
    """A generic dynamic-prompting reply: one JSON node."""
    obj = load_json_object(text or "")
    if isinstance(obj, Unusable):
        return obj
    content = _text(obj.get("content") if "content" in obj else obj.get("step"))
    if not content:
        return Unusable("missing_content", excerpt(text))
    raw_action = obj.get("action", obj.get("next_action"))
    action = read_action(raw_action)
    if action is None:
        return Unusable("bad_action", excerpt(text))
    bad = _step(content, previous)
    if bad is not None:
        return bad
    answer = _text(obj.get("answer"))
    if is_final(content):
        action = "conclude"
    if action == "conclude":
        answer = _conclusion_answer(content, answer, choices)
        if not answer:
            return Unusable("conclude_without_answer", excerpt(text))
    else:
        answer = None
    return Node(
        content=content,
        action=action,
        previous_stage=_text(obj.get("previous_stage")),
        current_state=_text(obj.get("current_state")),
        answer=answer,
    )


def parse_plain_step(
    text: str | None, previous: str | None = None, choices: Sequence[str] | None = None
) -> Node | Unusable:
    """A step preset's reply: the plain-text atomic step; it concludes when it states the final answer."""
    content = (text or "").strip()
    if not content:
        return Unusable("empty_reply", "")
    bad = _step(content, previous)
    if bad is not None:
        return bad
    if is_final(content):
        answer = extract_answer(content, choices)
        if not answer:
            return Unusable("conclude_without_answer", excerpt(text))
        return Node(content=content, action="conclude", answer=answer)
    return Node(content=content, action="continue")


def parse_path(text: str | None, choices: Sequence[str] | None = None) -> list[Node] | Unusable:
    """An atomization reply: ``{"steps": [{content, action}], "answer"}``; the last step concludes."""
    obj = load_json_object(text or "")
    if isinstance(obj, Unusable):
        return obj
    steps = obj.get("steps")
    if not isinstance(steps, list) or not steps:
        return Unusable("missing_steps", excerpt(text))
    nodes: list[Node] = []
    previous: str | None = None
    for raw in steps:
        if isinstance(raw, str):
            raw = {"content": raw, "action": "continue"}
        if not isinstance(raw, dict):
            return Unusable("bad_step", excerpt(text))
        content = _text(raw.get("content"))
        if not content:
            return Unusable("missing_content", excerpt(text))
        action = read_action(raw.get("action", raw.get("next_action", "continue")))
        if action is None:
            return Unusable("bad_action", excerpt(text))
        bad = _step(content, previous)
        if bad is not None:
            return bad
        nodes.append(Node(content=content, action="conclude" if is_final(content) else action))
        previous = content
    answer = _conclusion_answer(nodes[-1].content, _text(obj.get("answer")), choices)
    if not answer:
        return Unusable("conclude_without_answer", excerpt(text))
    last = nodes[-1]
    nodes[-1] = Node(content=last.content, action="conclude", answer=answer)
    if any(n.action == "conclude" for n in nodes[:-1]):
        return Unusable("concludes_before_the_end", excerpt(text))
    return nodes


def parse_solution(
    content: str | None, reasoning: str | None, choices: Sequence[str] | None = None
) -> list[Node] | Unusable:
    """A whole solution from an endpoint that reasons step by step itself (``--mode solve``): the steps are the
    lines of ``reasoning`` (this service's ``message.reasoning``, a reasoning model's ``reasoning_content``) with
    ``content`` the answer, or, without reasoning, the lines of ``content`` ending in a final-answer step."""
    lines = [line.strip() for line in (reasoning or content or "").splitlines() if line.strip()]
    if not lines:
        return Unusable("empty_reply", "")
    nodes: list[Node] = []
    for line in lines:
        bad = _step(line, nodes[-1].content if nodes else None)
        if bad is not None:
            return bad
        nodes.append(Node(content=line, action="continue"))
    stated = (content or "").strip() if reasoning else None
    answer = _conclusion_answer(nodes[-1].content, stated or None, choices)
    if not answer:
        return Unusable("conclude_without_answer", excerpt(reasoning or content))
    if any(is_final(n.content) for n in nodes[:-1]):
        return Unusable("concludes_before_the_end", excerpt(reasoning or content))
    nodes[-1] = Node(content=nodes[-1].content, action="conclude", answer=answer)
    return nodes
