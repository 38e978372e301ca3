"""A solve tied to its client: plain (``solve_until_disconnect``) or as Server-Sent Events, the search events as
they happen, then the response body or a typed error. ``/solve`` and the OpenAI facade share these.

Wire format (one SSE event each): ``expansion``, ``scoring`` and ``selection`` carry the models of
``service.events``; ``result`` carries exactly the non-streamed ``SolveResponse`` body; ``error`` carries the usual
``{"error": {"code", "message", "field"}}``. Comment lines (``: keep-alive``) fill long waits. The framing is FastAPI's
(``fastapi.sse``): the renderers yield ``ServerSentEvent`` objects, an ``EventSourceResponse`` carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.sse import EventSourceResponse, ServerSentEvent, format_sse_event
from pydantic import BaseModel
from starlette.background import BackgroundTask

from service.api.errors import error_body, http_error
from service.events import ExpansionEvent, ScoringEvent, SelectionEvent
from service.runtime import Runtime
from service.schemas import SolveParams, SolveResponse

DISCONNECT_POLL_S = 0.25

EVENT_STREAM = EventSourceResponse.media_type
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = ServerSentEvent(comment="keep-alive")

SearchUpdate = ExpansionEvent | ScoringEvent | SelectionEvent
StreamItem = SearchUpdate | SolveResponse | None
"""What ``solve_with_events`` yields: a search event, the final response, or None for a keep-alive tick."""

_DONE = object()

STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with stream (Server-Sent Events): events named expansion, scoring and selection, "
        "then result (the JSON body) or error; ': keep-alive' comments on long waits.",
        "content": {
            EVENT_STREAM: {
                "schema": {
                    "description": "The data of one event: the event's own model, or for 'result' the JSON body, "
                    "for 'error' the error body.",
                    "oneOf": [
                        {"$ref": f"#/components/schemas/{name}"}
                        for name in (
                            "ExpansionEvent",
                            "ScoringEvent",
                            "SelectionEvent",
                            "SolveResponse",
                            "ErrorResponse",
                        )
                    ],  # fmt: skip
                }
            }
        },
    }
}


def wants_stream(request: Request, params: SolveParams) -> bool:
    """``"stream": true`` in the body, or an ``Accept`` header that asks for an event stream."""
    return params.stream or EVENT_STREAM in request.headers.get("accept", "")


def encode(event: ServerSentEvent) -> bytes:
    """One event in the SSE wire format, as FastAPI's generator routes write it: ``raw_data`` as is, ``data`` as
    JSON (a pydantic model through ``model_dump_json``)."""
    data: str | None = event.raw_data
    if data is None and event.data is not None:
        data = event.data.model_dump_json() if isinstance(event.data, BaseModel) else json.dumps(event.data)
    return format_sse_event(data_str=data, event=event.event, id=event.id, retry=event.retry, comment=event.comment)


async def solve_until_disconnect(
    request: Request, runtime: Runtime, params: SolveParams, image: bytes | None
) -> SolveResponse:
    """Run the solve; a client that disconnects cancels it (and so its queued jobs)."""
    task = asyncio.create_task(runtime.solve(params, image))
    watcher = asyncio.create_task(_cancel_on_disconnect(request, task))
    try:
        return await task
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _cancel_on_disconnect(request: Request, task: asyncio.Task[Any]) -> None:
    while not task.done():
        if await request.is_disconnected():
            task.cancel()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def solve_with_events(
    runtime: Runtime, params: SolveParams, image: bytes | None, keepalive_s: float
) -> AsyncGenerator[StreamItem, None]:
    """Run one solve and yield its events as they happen, None after ``keepalive_s`` of silence, then the response.

    The solve's errors propagate from the last step. Closing the iterator early (the client went away) cancels the
    search, and with it the request's queued jobs.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(runtime.solve(params, image, queue.put_nowait))

    def finished(done: asyncio.Task[SolveResponse]) -> None:
        if not done.cancelled():
            done.exception()  # retrieved here (re-raised below by result()), never "exception was never retrieved"
        queue.put_nowait(_DONE)  # after every event the search emitted

    task.add_done_callback(finished)
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                yield None
                continue
            if item is _DONE:
                yield task.result()
                return
            yield item
    finally:
        task.cancel()  # no await: this may run inside a cancelled scope; the task cancels its jobs itself


async def render_solve(
    runtime: Runtime,
    params: SolveParams,
    image: bytes | None,
    render: Callable[[SearchUpdate | SolveResponse], Iterable[ServerSentEvent]],
    render_error: Callable[[Exception], ServerSentEvent],
) -> AsyncGenerator[ServerSentEvent, None]:
    """The body of a streamed solve: ``render`` writes each event and the response, keep-alives fill the silences,
    and an error after the stream has started is written by ``render_error``."""
    try:
        events = solve_with_events(runtime, params, image, runtime.settings.stream_keepalive_s)
        async with contextlib.aclosing(events) as items:
            async for item in items:
                if item is None:
                    yield KEEPALIVE
                else:
                    for event in render(item):
                        yield event
    except Exception as exc:
        yield render_error(exc)


class Admission:
    """A slot of the gateway's in-flight limit held for the life of a stream, released exactly once."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = False

    async def acquire(self) -> None:
        await self.semaphore.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


def event_stream(
    request: Request,
    body: Callable[[], AsyncGenerator[ServerSentEvent, None]],
    on_close: Callable[[], Awaitable[object]] | None = None,
) -> EventSourceResponse:
    """An SSE response that holds an admission slot while ``body`` runs (acquired when the stream starts).

    A client that disconnects stops the stream; the background step then closes the generators at once (their
    ``finally`` cancels the search) instead of leaving that to the garbage collector. ``on_close`` (releasing the
    API key's quota lease) runs when the stream ends, however it ends; it must be safe to call twice.
    """
    admission = Admission(request.app.state.admission)

    async def release() -> None:
        admission.release()
        if on_close is not None:
            await on_close()

    async def guarded() -> AsyncGenerator[bytes, None]:
        await admission.acquire()
        try:
            async with contextlib.aclosing(body()) as events:
                async for event in events:
                    yield encode(event)
        finally:
            await release()

    chunks = guarded()

    async def close() -> None:
        await chunks.aclose()
        await release()

    return EventSourceResponse(chunks, headers=SSE_HEADERS, background=BackgroundTask(close))


def solve_event_stream(
    request: Request,
    runtime: Runtime,
    params: SolveParams,
    image: bytes | None,
    on_close: Callable[[], Awaitable[object]] | None = None,
) -> EventSourceResponse:
    """``/solve`` streamed: search events, then ``result`` (the non-streamed body) or ``error``."""

    def render(item: SearchUpdate | SolveResponse) -> Iterable[ServerSentEvent]:
        yield ServerSentEvent(event="result" if isinstance(item, SolveResponse) else item.type, data=item)

    def render_error(exc: Exception) -> ServerSentEvent:
        return ServerSentEvent(event="error", data=error_body(http_error(exc)))

    def body() -> AsyncGenerator[ServerSentEvent, None]:
        return render_solve(runtime, params, image, render, render_error)

    return event_stream(request, body, on_close)
