"""What the HTTP API tests share: an app with queues, tokens of three principals, and an
httpx client speaking ASGI to the API (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tidings import Tidings
from tidings.api import create_api
from tidings.security.tokens import TokenStore

READ_ONLY = ["queue:inspect:*", "dlq:read:*", "schedules:read", "campaigns:read",
             "breakers:read", "workers:read"]


@dataclass
class Api:
    app: Tidings
    http: httpx.AsyncClient
    tokens: dict[str, str]

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def get(self, path: str, who: str = "admin", **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.auth(who), **kw)

    async def post(self, path: str, body: Any = None, who: str = "admin") -> httpx.Response:
        return await self.http.post(path, json=body if body is not None else {},
                                    headers=self.auth(who))

    async def call(self, method: str, path: str, body: Any = None,
                   who: str = "admin") -> httpx.Response:
        return await self.http.request(method, path, json=body, headers=self.auth(who))


async def make_tokens(app: Tidings) -> dict[str, str]:
    store = TokenStore(app)
    return {"admin": (await store.create("ops-admin", ["admin"]))[0],
            "reader": (await store.create("ops-reader", READ_ONLY))[0],
            "publisher": (await store.create("orchestrator", ["publish:email"]))[0]}


@asynccontextmanager
async def serve(make_app: Callable[..., Tidings], **settings: Any) -> AsyncIterator[Api]:
    """An app declaring ``email`` and ``sms``, connected, its API behind an ASGI client."""
    app = make_app(**settings)
    app.queue("email")
    app.queue("sms")
    await app.connect()
    tokens = await make_tokens(app)
    transport = httpx.ASGITransport(app=create_api(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield Api(app, http, tokens)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of an error response, checked to have the one shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "field", "reason"} <= set(body["error"]), body
    assert isinstance(body["error"]["reason"], str) and body["error"]["reason"]
    return dict(body["error"])
