"""``python -m tests.integration.scripted_llm --host H --port P``: a real HTTP server speaking the OpenAI chat API
badly on purpose, for the annotation batch tests.

Questions look like ``What is 3 + 4?``. What the server does with a problem depends only on the question (a hash of
it picks a behaviour), so two runs over the same problems get the same answers whatever the timing:

==========  =========================================================================================
behaviour   answer
==========  =========================================================================================
garbage     200 ``text/plain`` bytes that are not JSON at all
prose       200 chat completion whose content is prose, not JSON
empty       200 chat completion with an empty content
rate        429 (``Retry-After: 0``) for the first two tries of each request, then a good node
down        500 on every try
flaky       500 on the first try of each request, then a good node
slow        the first try of each request sleeps 2 s (past the client's timeout), then a good node
wrong       good nodes that conclude with a wrong answer
fenced      a good node wrapped in prose and a fenced code block
good        a good node (3 steps: read, calculate, conclude)
==========  =========================================================================================

``--no-schema`` answers 400 to any request carrying ``response_format`` (an endpoint without structured output).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from collections import Counter
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

BEHAVIOURS = ("garbage", "prose", "empty", "rate", "down", "flaky", "slow", "wrong", "fenced", "good")
_Q_RE = re.compile(r"What is (\d+) \+ (\d+)\?")


def behaviour(question: str) -> str:
    """The behaviour a question gets (tests use it to predict outcomes)."""
    digest = hashlib.sha256(question.encode()).digest()
    return BEHAVIOURS[digest[0] % len(BEHAVIOURS)]


def _user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def _completion(content: str, prompt: str) -> dict[str, Any]:
    completion_tokens = max(1, len(content) // 4)
    prompt_tokens = max(1, len(prompt) // 4)
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _node(prompt: str, a: int, b: int, wrong: bool) -> dict[str, Any]:
    history = prompt.split("REASONING SO FAR:", 1)[-1]
    done = len(re.findall(r"^Step \d+:", history, re.M))
    answer = str(a + b + (1 if wrong else 0))
    if done == 0:
        return {"previous_stage": "none", "current_state": "the numbers are given", "action": "continue",
                "content": f"The question adds {a} and {b}.", "answer": None}  # fmt: skip
    if done == 1:
        return {"previous_stage": "the operands are known", "current_state": "add them", "action": "continue",
                "content": f"{a} + {b} = {answer}", "answer": None}  # fmt: skip
    return {"previous_stage": "the sum is known", "current_state": "conclude", "action": "conclude",
            "content": f"To sum up, the final answer is: {answer}", "answer": answer}  # fmt: skip


def _path(a: int, b: int, wrong: bool) -> dict[str, Any]:
    answer = str(a + b + (1 if wrong else 0))
    return {
        "steps": [
            {"content": f"The question adds {a} and {b}.", "action": "continue"},
            {"content": f"{a} + {b} = {answer}", "action": "continue"},
            {"content": f"To sum up, the final answer is: {answer}", "action": "conclude"},
        ],
        "answer": answer,
    }


def build_app(no_schema: bool) -> Starlette:
    tries: Counter[str] = Counter()

    async def chat(request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        if no_schema and "response_format" in body:
            return JSONResponse({"error": {"message": "response_format is not supported"}}, status_code=400)
        prompt = _user_text(body)
        match = _Q_RE.search(prompt)
        if match is None:
            return JSONResponse(_completion("I cannot read this question.", prompt))
        a, b = int(match.group(1)), int(match.group(2))
        kind = behaviour(match.group(0))
        key = hashlib.sha256(raw).hexdigest()
        tries[key] += 1
        if kind == "garbage":
            return PlainTextResponse("\x00<html>502 bad gateway?? }{ not json", status_code=200)
        if kind == "prose":
            return JSONResponse(_completion("Well, let me think about adding these numbers carefully.", prompt))
        if kind == "empty":
            return JSONResponse(_completion("", prompt))
        if kind == "rate" and tries[key] <= 2:
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0"})
        if kind == "down" or (kind == "flaky" and tries[key] == 1):
            return JSONResponse({"error": {"message": "internal error"}}, status_code=500)
        if kind == "slow" and tries[key] == 1:
            await asyncio.sleep(2.0)
        atomize = "SHORT SOLUTION:" in prompt
        obj = _path(a, b, kind == "wrong") if atomize else _node(prompt, a, b, kind == "wrong")
        text = json.dumps(obj)
        if kind == "fenced":
            text = f"Here is the node you asked for:\n```json\n{text}\n```\nHope it helps."
        return JSONResponse(_completion(text, prompt))

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-schema", action="store_true")
    args = parser.parse_args()
    uvicorn.run(build_app(args.no_schema), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
