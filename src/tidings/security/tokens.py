"""API tokens: random secrets given out once, stored only as a hash, scoped and expiring.

A token reads ``tdg_<id>_<secret>``; the server keeps, under ``<prefix>:security:tokens``,
the id's record: name, scopes, creation and expiry times and the SHA-256 of the secret
(a 256-bit random secret needs no slow hash: there is nothing to guess), compared in
constant time. A revoked token's record is deleted. ``tidings tokens create|list|revoke``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from ..core.clock import Clock
from ..core.errors import InvalidTokenError, ValidationError
from ..core.stored import text
from ..queues.host import QueueHost
from .principals import Principal, check_scope

PREFIX = "tdg_"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is stored of a token (never the secret): shown by ``tidings tokens list``."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at, "expires_at": self.expires_at}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """The API tokens of an app's key prefix."""

    def __init__(self, app: QueueHost) -> None:
        self.app = app

    @property
    def _key(self) -> str:
        return self.app.key_space.tokens

    @property
    def _clock(self) -> Clock:
        return self.app.clock

    async def create(self, name: str, scopes: list[str], expires_in: float | None = None
                     ) -> tuple[str, TokenRecord]:
        """A new token: ``(the token, to hand out once, its record)``."""
        if not name or len(name) > 128:
            raise ValidationError("name", "must be 1 to 128 characters")
        if not scopes:
            raise ValidationError("scope", "a token needs at least one scope")
        if expires_in is not None and expires_in <= 0:
            raise ValidationError("expires_in", f"must be > 0 seconds, got {expires_in}")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self._clock.time()
        record = TokenRecord(token_id, name, tuple(check_scope(s) for s in scopes), now,
                             None if expires_in is None else now + expires_in)
        stored = {**record.as_dict(), "hash": _digest(secret)}
        await self.app.connect()
        await self.app.broker.client.hset(self._key, token_id, orjson.dumps(stored))
        return f"{PREFIX}{token_id}_{secret}", record

    async def list(self) -> list[TokenRecord]:
        await self.app.connect()
        found = await self.app.broker.client.hgetall(self._key)
        return sorted((_record(orjson.loads(v)) for v in found.values()),
                      key=lambda r: r.created_at)

    async def revoke(self, token_id: str) -> bool:
        """Delete the token; False if there was none of that id."""
        await self.app.connect()
        return bool(await self.app.broker.client.hdel(self._key, token_id))

    async def authenticate(self, token: str) -> Principal:
        """The principal of ``token``; InvalidTokenError (never quoting it) otherwise."""
        token_id, secret = _split(token)
        await self.app.connect()
        raw = await self.app.broker.client.hget(self._key, token_id)
        if raw is None:
            raise InvalidTokenError("unknown or revoked token")
        stored = orjson.loads(text(raw))
        if not hmac.compare_digest(stored.get("hash", ""), _digest(secret)):
            raise InvalidTokenError("unknown or revoked token")
        record = _record(stored)
        if record.expires_at is not None and self._clock.time() >= record.expires_at:
            raise InvalidTokenError(f"token {record.id} ({record.name}) has expired")
        return Principal.of(record.name, record.scopes, "token")


def _split(token: str) -> tuple[str, str]:
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise InvalidTokenError("not a tidings API token (tdg_...)")
    token_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or not token_id or not secret:
        raise InvalidTokenError("malformed API token")
    return token_id, secret


def _record(stored: dict[str, Any]) -> TokenRecord:
    return TokenRecord(str(stored["id"]), str(stored["name"]), tuple(stored["scopes"]),
                       float(stored["created_at"]),
                       None if stored.get("expires_at") is None else float(stored["expires_at"]))
