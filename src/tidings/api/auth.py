"""Who calls: a bearer token authenticated once per ``auth_cache_seconds``, and the checks.

Every route takes an :class:`Access` (a FastAPI dependency): ``access.require(p)`` checks
a read permission (no audit record: reads are not changes), ``access.change(...)`` runs a
change through :meth:`tidings.security.audit.Audit.operation` (allowed or denied, then
done or failed, to every audit sink and the ledger's trail). Without a token the call is
refused (401), unless ``TIDINGS_API__ALLOW_ANONYMOUS`` is on: then it runs as the
principal ``anonymous`` holding only ``TIDINGS_API__ANONYMOUS_SCOPES``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import Request

from ..app import Tidings
from ..core.errors import InvalidTokenError
from ..security.audit import Operation
from ..security.auth import Authenticator
from ..security.principals import Principal

_CACHE_MAX = 10_000


class TokenCache:
    """Principals by token digest, each for ``ttl`` seconds (the raw token is not kept)."""

    def __init__(self, app: Tidings, ttl: float) -> None:
        self.app, self.ttl = app, ttl
        self.authenticator = app.extension(Authenticator)
        self._known: dict[bytes, tuple[float, Principal]] = {}

    async def principal(self, token: str) -> Principal:
        if not self.ttl:
            return await self.authenticator.authenticate(token)
        digest = hashlib.blake2b(token.encode(), digest_size=16).digest()
        now = time.monotonic()
        hit = self._known.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self.authenticator.authenticate(token)
        if len(self._known) >= _CACHE_MAX:
            self._known.clear()
        self._known[digest] = (now + self.ttl, principal)
        return principal


class Access:
    """The caller of one request and the app it acts on."""

    __slots__ = ("app", "principal")

    def __init__(self, app: Tidings, principal: Principal) -> None:
        self.app, self.principal = app, principal

    def require(self, permission: str) -> None:
        """NotAuthorizedError (403) unless the caller has ``permission``."""
        self.principal.require(permission)

    def allows(self, permission: str) -> bool:
        return self.principal.allows(permission)

    def change(self, permission: str, action: str, target: str,
               **detail: Any) -> AbstractAsyncContextManager[Operation]:
        """Check ``permission`` and audit the change run inside (see the module doc)."""
        return self.app.audit.operation(self.principal, permission, action, target, **detail)


class Guard:
    """Builds the :class:`Access` of each request from its ``Authorization`` header."""

    def __init__(self, app: Tidings) -> None:
        self.app = app
        settings = app.settings.api
        self.cache = TokenCache(app, settings.auth_cache_seconds)
        self.anonymous = (Principal.of("anonymous", settings.anonymous_scopes, "anonymous")
                          if settings.allow_anonymous else None)

    async def __call__(self, request: Request) -> Access:
        app = self.app
        if not app.broker.connected:  # mounted in an app whose lifespan does not connect us
            await app.connect()
        header = request.headers.get("authorization")
        if not header:
            if self.anonymous is None:
                raise InvalidTokenError("no bearer token (send 'Authorization: Bearer "
                                        "<token>'; anonymous access is off)")
            return Access(app, self.anonymous)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidTokenError("the Authorization header is not 'Bearer <token>'")
        return Access(app, await self.cache.principal(token.strip()))


async def lifespan_of(app: Tidings) -> AsyncIterator[None]:
    """Connect ``app`` for the server's lifetime, and close it after."""
    await app.connect()
    try:
        yield
    finally:
        await app.close()
