"""Annotating one problem: a dynamic-prompting path (node by node), a short-CoT atomization (one call), or a whole
solution from an endpoint that reasons step by step itself (``solve``: the bare question to this service's ``/v1``
or a reasoning model; its reasoning lines are the path, its content the answer).

The result is one *annotation record* (a JSON-ready dict, the line ``annotations.jsonl`` holds) whatever happens:

* ``status: accepted``: a path that concludes with the reference answer (``research.eval.matching``: rules, then
  math-verify);
* ``status: mismatch``: a path that concludes with another answer (kept apart, never dropped);
* ``status: rejected``: no path, with ``reason`` (``unusable:<why>`` after the resamples of one node ran out,
  ``no_conclusion`` after ``max_steps`` nodes, ``no_solution`` for atomization without a short solution, or the
  HTTP failure that outlived its retries: ``http_500``, ``http_429``, ``timeout``...).

Every reply that could not be used is listed under ``unusable`` with its reason and an excerpt. Records hold no
timings or attempt counts, so a run that was killed and resumed writes the same records as one that was not.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from atomthink.prompts import PRESETS
from research.annotate.client import CallFailure, ChatClient, Reply, chat_messages, image_data_url
from research.annotate.parse import Node, Unusable, excerpt, parse_node, parse_path, parse_plain_step, parse_solution
from research.annotate.problems import AnnotateProblem
from research.annotate.prompts import (
    GENERIC,
    NODE_SCHEMA,
    PATH_SCHEMA,
    atomize_messages,
    dynamic_messages,
    preset_messages,
    question_text,
)
from research.eval.matching import match_answer

Parsed = TypeVar("Parsed")
Mode = Literal["dynamic", "atomize", "solve"]
MODES: tuple[Mode, ...] = ("dynamic", "atomize", "solve")
Status = Literal["accepted", "mismatch", "rejected"]
RECORD_VERSION = 1


@dataclass(frozen=True)
class AnnotateConfig:
    """How each problem is annotated (also written to ``run.json``; a resume must use the same)."""

    mode: Mode = "dynamic"
    prompt_style: str = GENERIC
    """``generic`` (JSON nodes) or a step preset of ``atomthink.prompts`` (plain-text steps, dynamic mode)."""
    max_steps: int = 12
    """Most nodes of a dynamic path."""
    max_resamples: int = 2
    """Extra calls for one node (or one atomization) whose reply could not be used."""
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int | None = None
    """Per call; default: 384 per node, 1024 per atomization, the preset's step budget for a step preset."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_style != GENERIC and self.prompt_style not in PRESETS:
            raise ValueError(f"unknown prompt style {self.prompt_style!r}; known: {GENERIC}, {', '.join(PRESETS)}")
        if self.prompt_style != GENERIC and self.mode != "dynamic":
            raise ValueError("a step preset prompt style works in dynamic mode only")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def record_id(problem_id: str, config: AnnotateConfig) -> str:
    """Deterministic: the same problem annotated the same way always gets the same id."""
    key = f"{config.mode}\x00{config.prompt_style}\x00{problem_id}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def call_seed(rid: str, depth: int, attempt: int, base: int) -> int:
    digest = hashlib.sha256(f"{rid}/{depth}/{attempt}/{base}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class Annotator:
    """Annotates problems through one :class:`ChatClient`."""

    def __init__(self, client: ChatClient, config: AnnotateConfig) -> None:
        self.client = client
        self.config = config

    def base_record(self, problem: AnnotateProblem) -> dict[str, Any]:
        """A rejected record without a reason yet: what every outcome starts from."""
        item = problem.item
        return {
            "v": RECORD_VERSION,
            "id": record_id(problem.id, self.config),
            "problem_id": problem.id,
            "mode": self.config.mode,
            "prompt_style": self.config.prompt_style,
            "question": question_text(item.question, item.choices),
            "image": problem.image_ref,
            "reference": item.answer,
            "status": "rejected",
            "reason": None,
            "steps": [],
            "answer": None,
            "match": None,
            "unusable": [],
            "usage": {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0},
        }

    async def annotate(self, problem: AnnotateProblem) -> dict[str, Any]:
        item = problem.item
        record = self.base_record(problem)
        rid, question = record["id"], record["question"]
        if item.image is not None and not item.image.is_file():
            return {**record, "reason": "image_missing"}
        image_url = image_data_url(item.image) if item.image is not None else None
        if self.config.mode == "atomize":
            nodes_or_reason = await self._atomize(problem, question, image_url, record, rid)
        elif self.config.mode == "solve":
            nodes_or_reason = await self._solve(problem, question, image_url, record, rid)
        else:
            nodes_or_reason = await self._dynamic(problem, question, image_url, record, rid)
        if isinstance(nodes_or_reason, str):
            record["reason"] = nodes_or_reason
            return record
        nodes = nodes_or_reason
        record["steps"] = [_step_record(n) for n in nodes]
        answer = nodes[-1].answer
        verdict = match_answer(answer, item)
        record["answer"] = answer
        record["match"] = {"correct": verdict.correct, "method": verdict.method, "prediction": verdict.prediction}
        record["status"] = "accepted" if verdict.correct else "mismatch"
        return record

    async def _call(
        self,
        record: dict[str, Any],
        system: str | None,
        user: str,
        image_url: str | None,
        *,
        schema: dict[str, Any] | None,
        schema_name: str,
        max_tokens: int,
        seed: int,
        stop: list[str] | None = None,
    ) -> Reply | CallFailure:
        result = await self.client.chat(
            chat_messages(system, user, image_url),
            schema=schema,
            schema_name=schema_name,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
        )
        usage = record["usage"]
        usage["calls"] += 1
        if isinstance(result, Reply):
            usage["prompt_tokens"] += result.prompt_tokens
            usage["completion_tokens"] += result.completion_tokens
        return result

    async def _dynamic(
        self, problem: AnnotateProblem, question: str, image_url: str | None, record: dict[str, Any], rid: str
    ) -> list[Node] | str:
        config = self.config
        preset = PRESETS.get(config.prompt_style)
        if preset is None:
            max_tokens = config.max_tokens or 384
            stop = None
        else:
            max_tokens = config.max_tokens or preset.step_max_tokens
            stop = [preset.step_delimiter] if preset.step_delimiter else None
        nodes: list[Node] = []
        for depth in range(config.max_steps):
            texts = [n.content for n in nodes]
            if preset is None:
                system, user = dynamic_messages(question, texts)
            else:
                system, user = preset_messages(preset, question, texts)
            previous = texts[-1] if texts else None
            node = await self._resample(
                record,
                rid,
                depth,
                system,
                user,
                image_url,
                schema=NODE_SCHEMA if preset is None else None,
                schema_name="atomthink_node",
                max_tokens=max_tokens,
                stop=stop,
                read=functools.partial(self._read_node, previous=previous, problem=problem),
            )
            if isinstance(node, str):
                return node
            nodes.append(node)
            if node.action == "conclude":
                return nodes
        return "no_conclusion"

    def _read_node(self, reply: Reply, previous: str | None, problem: AnnotateProblem) -> Node | Unusable:
        if reply.finish_reason == "length" and self.config.prompt_style == GENERIC:
            parsed = parse_node(reply.text, previous, problem.item.choices)
            return parsed if isinstance(parsed, Node) else Unusable("truncated", excerpt(reply.text))
        if self.config.prompt_style == GENERIC:
            return parse_node(reply.text, previous, problem.item.choices)
        return parse_plain_step(reply.text, previous, problem.item.choices)

    async def _resample(
        self,
        record: dict[str, Any],
        rid: str,
        depth: int,
        system: str | None,
        user: str,
        image_url: str | None,
        *,
        schema: dict[str, Any] | None,
        schema_name: str,
        max_tokens: int,
        read: Callable[[Reply], Parsed | Unusable],
        stop: list[str] | None = None,
    ) -> Parsed | str:
        """One call, resampled up to ``max_resamples`` times while ``read`` finds its reply unusable (every such
        reply listed under ``unusable`` at ``depth``): what ``read`` made of the first usable reply, or the reason
        none came (the call's failure, or ``unusable:<the last reply's reason>``)."""
        last = "none"
        for attempt in range(self.config.max_resamples + 1):
            result = await self._call(
                record,
                system,
                user,
                image_url,
                schema=schema,
                schema_name=schema_name,
                max_tokens=max_tokens,
                seed=call_seed(rid, depth, attempt, self.config.seed),
                stop=stop,
            )
            if isinstance(result, CallFailure):
                record["unusable"].append({"step": depth, "reason": result.reason, "excerpt": ""})
                return result.reason
            parsed = Unusable(result.error, excerpt(result.body_excerpt)) if result.error is not None else read(result)
            if isinstance(parsed, Unusable):
                record["unusable"].append({"step": depth, "reason": parsed.reason, "excerpt": parsed.excerpt})
                last = parsed.reason
                continue
            return parsed
        return f"unusable:{last}"

    async def _atomize(
        self, problem: AnnotateProblem, question: str, image_url: str | None, record: dict[str, Any], rid: str
    ) -> list[Node] | str:
        if not problem.solution or not problem.solution.strip():
            return "no_solution"
        system, user = atomize_messages(question, problem.solution)

        def read(reply: Reply) -> list[Node] | Unusable:
            parsed = parse_path(reply.text, problem.item.choices)
            if isinstance(parsed, Unusable) and reply.finish_reason == "length":
                return Unusable("truncated", parsed.excerpt)
            return parsed

        max_tokens = self.config.max_tokens or 1024
        return await self._resample(
            record, rid, 0, system, user, image_url, schema=PATH_SCHEMA, schema_name="atomthink_path",
            max_tokens=max_tokens, read=read,
        )  # fmt: skip

    async def _solve(
        self, problem: AnnotateProblem, question: str, image_url: str | None, record: dict[str, Any], rid: str
    ) -> list[Node] | str:
        """The bare question to an endpoint that reasons step by step itself; its steps become the path."""

        def read(reply: Reply) -> list[Node] | Unusable:
            return parse_solution(reply.text, reply.reasoning, problem.item.choices)

        max_tokens = self.config.max_tokens or 1024
        return await self._resample(
            record, rid, 0, None, question, image_url, schema=None, schema_name="", max_tokens=max_tokens, read=read
        )


def _step_record(node: Node) -> dict[str, Any]:
    """The official annotation fields ``content``/``next_action`` plus the node's own fields."""
    return {
        "content": node.content,
        "next_action": node.next_action,
        "action": node.action,
        "previous_stage": node.previous_stage,
        "current_state": node.current_state,
    }
