"""Thin routes: validate, call the runtime built in the lifespan, map the result."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from atomthink.errors import BackendUnavailable, Overloaded
from atomthink.queue import metrics as queue_metrics
from service.api.auth import AuthDep, check_request
from service.api.parsing import read_solve_request
from service.api.stream import STREAMED, solve_event_stream, solve_until_disconnect, wants_stream
from service.quotas import QuotaGate, solve_cost
from service.runtime import Runtime
from service.schemas import ErrorResponse, SolveParams, SolveResponse

router = APIRouter()


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _multipart_schema() -> dict[str, Any]:
    """The multipart body's schema, generated from ``SolveParams`` (every field a form field) plus the image file:
    the two bodies cannot drift apart."""
    params = SolveParams.model_json_schema()
    image = {"type": "string", "format": "binary", "description": "The figure (PNG, JPEG, ...; optional)."}
    return {"type": "object", "required": params.get("required", []),
            "properties": {"image": image, **params["properties"]}}  # fmt: skip


_SOLVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SolveJsonRequest"}},
            "multipart/form-data": {"schema": {}},  # written by add_multipart_schema, with the app's OpenAPI
        },
    }
}


def add_multipart_schema(spec: dict[str, Any]) -> None:
    """Write the ``/solve`` multipart body's schema into an app's OpenAPI as it is built (``service.app``), not at
    import: the strategies registered by then (a test's, a plugin's) have their fields in it, as in the JSON body."""
    content = spec["paths"]["/solve"]["post"]["requestBody"]["content"]
    content["multipart/form-data"]["schema"] = _multipart_schema()


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 413, 415, 422, 429, 503)
}


def get_quotas(request: Request) -> QuotaGate:
    quotas: QuotaGate = request.app.state.quotas
    return quotas


QuotasDep = Annotated[QuotaGate, Depends(get_quotas)]


@router.post("/solve", response_model=SolveResponse, openapi_extra=_SOLVE_BODY, responses={**_ERRORS, **STREAMED})
async def solve(
    request: Request, runtime: RuntimeDep, principal: AuthDep, quotas: QuotasDep
) -> SolveResponse | EventSourceResponse:
    """Solve a (multimodal) math question in the requested mode; see ``SolveJsonRequest`` for the fields.

    With ``stream: true`` (or ``Accept: text/event-stream``) the answer is a stream of search events (SSE).
    """
    admission: asyncio.Semaphore = request.app.state.admission
    if admission.locked():
        raise Overloaded(f"{runtime.settings.max_in_flight} requests already in flight", retry_after_s=1)
    async with admission:
        params, image = await read_solve_request(request, runtime.settings)
        if wants_stream(request, params):
            # The stream outlives this handler: it holds its own admission slot and the quota lease until it ends.
            lease = contextlib.AsyncExitStack()
            await lease.enter_async_context(quotas.admit(principal, solve_cost(params)))
            return solve_event_stream(request, runtime, params, image, on_close=lease.aclose)
        async with quotas.admit(principal, solve_cost(params)):
            return await solve_until_disconnect(request, runtime, params, image)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Readiness: models loaded (embedded) and at least one live worker of each role; 503 while draining."""
    if runtime.draining:
        draining = {"ready": False, "workers": None, "queue": runtime.settings.queue, "draining": True}
        return JSONResponse(draining, status_code=503)
    try:
        workers = await runtime.workers_alive()
    except BackendUnavailable as exc:
        failure = {"ready": False, "workers": None, "queue": runtime.settings.queue, "error": exc.message}
        return JSONResponse(failure, status_code=503)
    ready = all(count > 0 for count in workers.values())
    body = {"ready": ready, "workers": workers, "queue": runtime.settings.queue}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus text; behind the API key only when ``metrics_require_key`` is set."""
    if runtime.settings.metrics_require_key:
        check_request(request.app.state.keys, request)
    with contextlib.suppress(BackendUnavailable):  # queue gauges keep their last value while the queue is down
        for role, stats in (await runtime.client.queue_stats()).items():
            queue_metrics.DEPTH.labels(role).set(stats.waiting)
            queue_metrics.PENDING.labels(role).set(stats.pending)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
