"""Step labels from an LLM judge, the alternative to rollout labels: any OpenAI-compatible ``/chat/completions``.

Off by default: the judge exists only when a base URL is given (``Settings.label_judge_base_url`` or the
``--judge-url`` flag); the key (``label_judge_api_key``) goes to that URL and nowhere else. The judge sees the
question, the reference answer and the numbered steps, and names the first wrong step (0: none). The reply is asked
for as JSON through ``response_format`` (a JSON schema); a server that refuses the schema is asked again without it,
and any reply is read tolerantly (a JSON object anywhere in the text, or a bare number). A reply that still cannot
be read leaves the path unlabelled with its reason; nothing is guessed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from tqdm import tqdm

from atomthink.prm_format import get_prm_preset
from atomthink.settings import Settings

JUDGE_PROMPT = (
    "You check a step-by-step solution of a math problem. Find the first step that is wrong: a misread fact, a "
    "calculation error, a logical error, an empty step or a step that only repeats an earlier one. Steps after a "
    "wrong step do not matter.\n\n"
    "Question: {question}\nReference answer: {answer}\n\nSolution steps:\n{steps}\n\n"
    'Reply with a JSON object {{"first_error_step": N}} where N is the number of the first wrong step, or 0 when '
    "every step is correct."
)
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "step_check",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"first_error_step": {"type": "integer", "minimum": 0}},
            "required": ["first_error_step"],
            "additionalProperties": False,
        },
    },
}
_OBJECT_RE = re.compile(r"\{[^{}]*\}")
_NUMBER_RE = re.compile(r"-?\d+")


class JudgeUnreadable(ValueError):
    """The judge's reply names no step."""


def parse_first_error(reply: str, n_steps: int) -> int:
    """The first wrong step (1-based; 0 = none) a reply names; ``JudgeUnreadable`` when it names none in range."""
    candidates: list[Any] = []
    for text in [reply.strip(), *(m.group() for m in _OBJECT_RE.finditer(reply))]:
        try:
            candidates.append(json.loads(text))
        except ValueError:
            continue
    for value in candidates:
        if isinstance(value, dict):
            value = value.get("first_error_step", value.get("first_error"))
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float | str) and re.fullmatch(r"\s*\d+\s*", str(value)):
            step = int(value)
            if 0 <= step <= n_steps:
                return step
    numbers = _NUMBER_RE.findall(reply)
    if len(numbers) == 1 and 0 <= int(numbers[0]) <= n_steps:
        return int(numbers[0])
    raise JudgeUnreadable(f"no step number in 0..{n_steps} in the reply {reply[:120]!r}")


def labels_from_first_error(first_error: int, n_steps: int) -> list[str]:
    """``+`` before the first wrong step, ``-`` from it on (all ``+`` when it is 0)."""
    if first_error == 0:
        return ["+"] * n_steps
    return ["+"] * (first_error - 1) + ["-"] * (n_steps - first_error + 1)


class StepJudge:
    """One chat completion per path, temperature 0; retries 429/5xx/timeouts with backoff."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.retries = retries
        self.use_schema = True
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout_s, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StepJudge:
        if not settings.label_judge_base_url:
            raise ValueError("the step judge needs a base URL: --judge-url or ATOMTHINK_LABEL_JUDGE_BASE_URL")
        key = settings.label_judge_api_key.get_secret_value() if settings.label_judge_api_key else None
        return cls(settings.label_judge_base_url, settings.label_judge_model, key,
                   timeout_s=settings.label_judge_timeout_s)  # fmt: skip

    async def __aenter__(self) -> StepJudge:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                response = await self._client.post("chat/completions", json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                if attempt == self.retries:
                    return response
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    async def first_error(self, question: str, answer: str, steps: list[str]) -> int:
        numbered = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "user", "content": JUDGE_PROMPT.format(question=question, answer=answer, steps=numbered)}
            ],
            "temperature": 0,
            "max_tokens": 64,
        }
        if self.use_schema:
            response = await self._post({**body, "response_format": RESPONSE_FORMAT})
            if response.status_code in (400, 422):  # the server takes no JSON schema: plain text from now on
                self.use_schema = False
            else:
                response.raise_for_status()
                return parse_first_error(_content(response), len(steps))
        response = await self._post(body)
        response.raise_for_status()
        return parse_first_error(_content(response), len(steps))


def _content(response: httpx.Response) -> str:
    try:
        return str(response.json()["choices"][0]["message"]["content"] or "")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise JudgeUnreadable(f"not a chat completion: {response.text[:120]!r}") from exc


@dataclass
class JudgeLabelConfig:
    data: str
    """JSONL of paths: PRM records (``question``, ``process``; ``answer`` or ``reference`` for the reference) as
    ``atomthink train cluster-labels`` and the data engine write them."""
    out: str
    prm_preset: str = "math-psa"
    """Whose step tag separates the steps of ``process``."""
    concurrency: int = 8
    limit: int | None = None


async def judge_labels(cfg: JudgeLabelConfig, judge: StepJudge, progress: bool = True) -> dict[str, Any]:
    """Label every path of ``cfg.data`` by the judge: ``prm.jsonl`` (labelled) and ``rejected.jsonl`` (with why)."""
    from research.data.records import read_jsonl

    tag = get_prm_preset(cfg.prm_preset).step_tag
    records = read_jsonl(Path(cfg.data))[: cfg.limit]
    out = Path(cfg.out)
    gate = asyncio.Semaphore(cfg.concurrency)
    bar = tqdm(total=len(records), desc="judge labels", disable=not progress)

    async def one(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        steps = split_steps(record["process"], tag)
        reference = str(record.get("answer", record.get("reference", "")))
        try:
            async with gate:
                first = await judge.first_error(record["question"], reference, steps)
        except JudgeUnreadable as exc:
            return record, f"unreadable: {exc}"
        except httpx.HTTPError as exc:
            return record, f"http: {type(exc).__name__}: {exc}"[:300]
        finally:
            bar.update(1)
        labelled = {**record, "label": labels_from_first_error(first, len(steps)), "source": "judge"}
        return labelled, None

    results = await asyncio.gather(*(one(r) for r in records))
    bar.close()
    written, reasons = await asyncio.to_thread(_write, out, results)
    summary = {"records": len(records), "labelled": written, "rejected": dict(reasons)}
    await asyncio.to_thread((out / "meta.json").write_text, json.dumps(summary, indent=2) + "\n")
    return summary


def _write(out: Path, results: list[tuple[dict[str, Any], str | None]]) -> tuple[int, Counter[str]]:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    reasons: Counter[str] = Counter()
    with open(out / "prm.jsonl", "w") as good, open(out / "rejected.jsonl", "w") as bad:
        for record, reason in results:
            if reason is None:
                good.write(json.dumps(record) + "\n")
                written += 1
            else:
                reasons[reason.split(":")[0]] += 1
                bad.write(json.dumps({"id": record.get("id"), "reason": reason}) + "\n")
    return written, reasons


def split_steps(process: str, step_tag: str) -> list[str]:
    """The steps of a ``process`` string, each followed by ``step_tag`` (the official data wrote Math-psa's tag without
    its leading space: both spellings are accepted)."""
    core = step_tag.strip(" ") or step_tag
    parts = process.split(core)
    if parts and not parts[-1].strip():
        parts = parts[:-1]
    return [p.strip() for p in parts]
