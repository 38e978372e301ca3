"""An OpenAI-compatible chat client for batch annotation: retries with back-off, a rate limit, usage totals.

Built on maintained libraries: ``httpx`` (HTTP), ``tenacity`` (retries with exponential back-off and jitter,
honouring ``Retry-After``), ``aiolimiter`` (a leaky-bucket request rate). Retried: timeouts, connection errors,
429 and 5xx answers (and 408). A final failure is returned as a :class:`CallFailure` with its reason
(``http_429``, ``http_500``, ``timeout``, ``connection``); a 200 whose body is not a chat completion is a
``Reply`` with ``error`` set. Nothing here raises on a bad server.

``response_format`` (JSON schema) is sent when ``structured`` is ``auto`` or ``json_schema``; in ``auto``, an
endpoint that answers it with a 400/422 is asked again without it, and the client stops sending it.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

Structured = Literal["auto", "json_schema", "off"]
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reply:
    """One chat completion answered with 200: its text, usage and, when the body was unusable, why."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    """``non_json_body``, ``no_choices``, ``no_content`` when the 200 body holds no message text."""
    body_excerpt: str = ""
    reasoning: str | None = None
    """``message.reasoning`` (this service's facade) or ``message.reasoning_content`` (reasoning models on vLLM)."""


@dataclass(frozen=True)
class CallFailure:
    """A call that failed after its retries (or at once, for a 4xx other than 408/429)."""

    reason: str
    attempts: int


@dataclass
class ClientStats:
    """Totals over a run (the summary and the progress bar read them)."""

    calls: int = 0
    http_attempts: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    structured_fallbacks: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def image_data_url(path: str | Path) -> str:
    """A ``data:`` URL holding the file's bytes (the MIME type from its suffix, PNG by default)."""
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def chat_messages(system: str | None, user: str, image_url: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    if image_url is None:
        messages.append({"role": "user", "content": user})
    else:
        messages.append(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": user}],
            }
        )
    return messages


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


class ChatClient:
    """``await client.chat(messages, ...)`` -> :class:`Reply` or :class:`CallFailure`. Use as an async context."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        requests_per_s: float | None = None,
        structured: Structured = "auto",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_retries = max_retries
        self.backoff = wait_exponential_jitter(multiplier=backoff_s, max=max_backoff_s, jitter=backoff_s)
        self.limiter = AsyncLimiter(requests_per_s, 1.0) if requests_per_s else None
        self.structured: Structured = structured
        self.extra_body = dict(extra_body or {})
        self.stats = ClientStats()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        return float(self.backoff(state))

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        schema: dict[str, Any] | None = None,
        schema_name: str = "reply",
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> Reply | CallFailure:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            **self.extra_body,
        }
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = list(stop)
        if schema is not None and self.structured != "off":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": schema, "strict": True},
            }
        self.stats.calls += 1
        result = await self._post(body)
        refused = isinstance(result, CallFailure) and result.reason in ("http_400", "http_422")
        # calls in flight when the first refusal came sent it too: they fall back as well
        if refused and "response_format" in body and self.structured != "json_schema":
            if self.structured == "auto":
                self.structured = "off"
                self.stats.structured_fallbacks += 1
            body.pop("response_format")
            result = await self._post(body)
        if isinstance(result, CallFailure):
            self.stats.failures += 1
        return result

    async def _post(self, body: dict[str, Any]) -> Reply | CallFailure:
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        self.stats.retries += 1
                    return await self._once(body)
        except _Retryable as exc:
            return CallFailure(exc.reason, attempts)
        except _Final as exc:
            return CallFailure(exc.reason, attempts)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, body: dict[str, Any]) -> Reply:
        if self.limiter is not None:
            await self.limiter.acquire()
        self.stats.http_attempts += 1
        try:
            response = await self._http.post(self.url, json=body)
        except httpx.TimeoutException:
            self._count("timeout")
            raise _Retryable("timeout") from None
        except httpx.TransportError:
            self._count("connection")
            raise _Retryable("connection") from None
        self._count(str(response.status_code))
        if response.status_code in RETRY_STATUS:
            raise _Retryable(f"http_{response.status_code}", _retry_after(response))
        if response.status_code != 200:
            raise _Final(f"http_{response.status_code}")
        return self._reply(response)

    def _count(self, key: str) -> None:
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1

    def _reply(self, response: httpx.Response) -> Reply:
        raw = response.text
        try:
            data = response.json()
        except ValueError:
            return Reply(None, error="non_json_body", body_excerpt=raw[:200])
        if not isinstance(data, dict):
            return Reply(None, error="non_json_body", body_excerpt=raw[:200])
        raw_usage = data.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        prompt_tokens = _int(usage.get("prompt_tokens"))
        completion_tokens = _int(usage.get("completion_tokens"))
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return Reply(None, prompt_tokens, completion_tokens, error="no_choices", body_excerpt=raw[:200])
        choice = choices[0]
        raw_message = choice.get("message")
        message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
        content = message.get("content")
        finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
        if not isinstance(content, str):
            return Reply(None, prompt_tokens, completion_tokens, finish, error="no_content", body_excerpt=raw[:200])
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        return Reply(
            content,
            prompt_tokens,
            completion_tokens,
            finish,
            reasoning=reasoning if isinstance(reasoning, str) else None,
        )


class _Final(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
