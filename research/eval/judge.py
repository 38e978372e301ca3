"""An optional LLM judge behind any OpenAI-compatible ``/chat/completions`` endpoint.

Off by default: it is built only when ``--judge`` is given, and only from ``Settings.eval_judge_base_url``,
``eval_judge_model`` and ``eval_judge_api_key`` (or their flags). The key is sent to that URL and nowhere else.
It decides answer equivalence when the rules say "wrong", and labels steps of items that carry no capability tags.
"""

from __future__ import annotations

import re
from types import TracebackType

import httpx

from atomthink.settings import Settings
from research.eval.capabilities import CAPABILITIES

EQUIVALENCE_PROMPT = (
    "You grade answers to math problems. Reply with exactly one word: yes if the model's answer means the same "
    "as the reference answer (same value, same option, equivalent expression), otherwise no.\n\n"
    "Question: {question}\nReference answer: {gold}\nModel's answer: {prediction}"
)
CAPABILITY_PROMPT = (
    "Classify one step of a solution to a math problem by the capability it uses. Reply with exactly one of: "
    + ", ".join(CAPABILITIES)
    + ".\n\nQuestion: {question}\nStep: {step}"
)


class JudgeError(RuntimeError):
    """The judge endpoint failed or answered something unreadable."""


class LlmJudge:
    """A small client: one chat completion per question, temperature 0, a few output tokens."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout_s, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmJudge:
        """The judge the settings name; fails when no base URL is configured."""
        if not settings.eval_judge_base_url:
            raise ValueError("--judge needs a base URL: --judge-url or ATOMTHINK_EVAL_JUDGE_BASE_URL")
        key = settings.eval_judge_api_key.get_secret_value() if settings.eval_judge_api_key else None
        return cls(
            settings.eval_judge_base_url, settings.eval_judge_model, key, timeout_s=settings.eval_judge_timeout_s
        )

    async def __aenter__(self) -> LlmJudge:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _ask(self, prompt: str, max_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        try:
            response = await self._client.post("chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"] or "")
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise JudgeError(f"judge request failed: {exc}") from exc

    async def equivalent(self, question: str, gold: str, prediction: str) -> bool:
        """Does the prediction mean the reference answer?"""
        reply = await self._ask(EQUIVALENCE_PROMPT.format(question=question, gold=gold, prediction=prediction), 4)
        return reply.strip().lower().startswith("yes")

    async def capability(self, question: str, step: str) -> str | None:
        """The capability the judge names for one step, or ``None`` when it names none of the fixed set."""
        reply = (await self._ask(CAPABILITY_PROMPT.format(question=question, step=step), 8)).lower()
        for name in CAPABILITIES:
            if re.search(rf"\b{name}\b", reply) or name.replace("_", " ") in reply:
                return name
        return None
