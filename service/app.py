"""The FastAPI gateway: built by ``create_app``; heavy objects are made in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from atomthink import __version__
from atomthink.settings import Settings
from service.api.auth import KeyRing
from service.api.errors import install_error_handlers
from service.api.openai_routes import OPENAI_SCHEMAS
from service.api.openai_routes import router as openai_router
from service.api.routes import add_multipart_schema, router
from service.events import ExpansionEvent, ScoringEvent, SelectionEvent
from service.quotas import make_quotas
from service.runtime import Runtime
from service.schemas import SolveJsonRequest
from service.web import install_web

log = logging.getLogger(__name__)

RuntimeFactory = Callable[[Settings], AbstractAsyncContextManager[Runtime]]


def create_app(runtime_factory: RuntimeFactory, settings: Settings | None = None) -> FastAPI:
    """The gateway app; ``runtime_factory`` builds its runtime in the lifespan (``service.runtime.gateway_runtime``
    over Redis, or the embedded one-process runtime that ``atomthink_serve`` wires)."""
    settings = settings or Settings()
    factory = runtime_factory
    keys = KeyRing.from_settings(settings)  # a bad key file stops the start, before any model loads

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.keys = keys
        log.info("API keys %s", f"on ({len(keys.names)} keys: {', '.join(keys.names)})" if keys.enabled else "off")
        async with factory(settings) as runtime:
            app.state.runtime = runtime
            app.state.admission = asyncio.Semaphore(settings.max_in_flight)
            app.state.quotas = make_quotas(settings)
            try:
                yield
            finally:
                await app.state.quotas.close()

    app = FastAPI(
        title="AtomThink Serve",
        version=__version__,
        description="Slow-thinking multimodal math: atomic steps, PRM-guided search.",
        lifespan=lifespan,
    )
    app.include_router(router)
    install_error_handlers(app)
    app.include_router(openai_router)
    install_web(app)
    _register_schemas(app, [SolveJsonRequest, ExpansionEvent, ScoringEvent, SelectionEvent, *OPENAI_SCHEMAS])
    return app


def _register_schemas(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add models to the OpenAPI components (bodies the routes read themselves, and the streamed events) and the
    multipart body of ``/solve``; built at the first request for the OpenAPI, from the strategies registered then."""
    original = app.openapi

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        _, definitions = models_json_schema(
            [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in definitions.get("$defs", {}).items():
            components.setdefault(name, definition)
        add_multipart_schema(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
