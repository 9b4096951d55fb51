"""The FastAPI application of the HTTP API: :func:`create_api`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ..app import Tidings
from . import dead_letters, errors, operations, publishing, queues, schedules
from .auth import Guard, lifespan_of

VERSION = "1"


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or
    as it arrives (a chunked body has none)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise errors.BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, counted, send)
        except errors.BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = errors.error_response(413, "BodyTooLarge", "body",
                                         f"request bodies are limited to {self.limit} bytes "
                                         "(TIDINGS_API__MAX_BODY_BYTES)")
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_api(app: Tidings, *, ui: ASGIApp | None = None, title: str = "tidings",
               connect: bool = True) -> FastAPI:
    """The HTTP API of ``app`` under ``/v1`` (OpenAPI at ``/openapi.json``, docs at
    ``/docs``), with ``ui`` (an ASGI app: the dashboard) mounted at ``/ui``.

    Serve it with uvicorn (``tidings api``), or mount it in your own ASGI app
    (``your_app.mount("/tidings", create_api(app))``): a mounted app's lifespan does not
    run, so the app connects on the first call; close it in your own shutdown. With
    ``connect`` the lifespan (when it runs) connects ``app`` at start-up and closes it
    at shutdown. Settings: ``app.settings.api`` (``TIDINGS_API__*``).
    """
    settings = app.settings.api

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not connect:
            yield
            return
        async for _step in lifespan_of(app):
            yield

    api = FastAPI(title=title, version=VERSION, lifespan=lifespan,
                  description="Publish to tidings queues and operate them over HTTP. Every "
                              "call but /v1/health needs 'Authorization: Bearer <token>'.")
    api.state.tidings = app
    api.state.tidings_guard = Guard(app)
    errors.install(api)
    for module in (publishing, queues, dead_letters, schedules, operations):
        api.include_router(module.router, prefix=f"/v{VERSION}")
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["*"], allow_headers=["Authorization",
                                                               "Content-Type"])
    api.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if ui is not None:
        api.mount("/ui", ui)
    _declare_bearer(api)
    return api


def _declare_bearer(api: FastAPI) -> None:
    """Name the bearer token in the OpenAPI document (checked by :class:`Guard`)."""
    make = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = make()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API token (tdg_...) or an OIDC JWT"}}
            for path, item in schema["paths"].items():
                for operation in item.values():
                    if path != f"/v{VERSION}/health":
                        operation["security"] = [{"bearer": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
