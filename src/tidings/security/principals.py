"""Who does something, and what they may do: principals with scoped permissions.

A permission is ``<action>[:<sub-action>]:<target>``: ``publish:email``,
``consume:sms``, ``dlq:read:email``, ``dlq:replay:sms``, ``dlq:purge:sms``,
``queue:pause:email``, ``queue:inspect:email``, ``schedules:write``, ``tokens:manage``,
``keys:manage``. A scope grants the permissions it matches segment by segment, ``*``
matching any one segment (``consume:*``, ``dlq:*:sms``); the scope ``admin`` grants
everything. The CLI and the HTTP API authenticate a bearer token to a :class:`Principal`
(:mod:`.tokens`, :mod:`.oidc`) and call :func:`tidings.security.audit.Audit.authorize`
before each management operation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core.errors import NotAuthorizedError, ValidationError

ADMIN = "admin"
_SEGMENT = re.compile(r"^(\*|[A-Za-z0-9_.\-]{1,64})$")


def check_scope(scope: str) -> str:
    """``scope`` if well formed: ``admin`` or 2-3 ``:``-separated segments (``*`` allowed)."""
    if scope == ADMIN:
        return scope
    parts = scope.split(":")
    if not 2 <= len(parts) <= 3 or not all(_SEGMENT.match(p) for p in parts):
        raise ValidationError("scope", f"{scope!r} is not a scope: admin, or action:target "
                              "or action:sub:target, each part a name or *")
    return scope


def grants(scope: str, permission: str) -> bool:
    """Whether ``scope`` grants ``permission``."""
    if scope == ADMIN:
        return True
    wanted, have = permission.split(":"), scope.split(":")
    return len(wanted) == len(have) and all(h in ("*", w) for h, w in zip(have, wanted,
                                                                          strict=True))


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``name`` (token name, JWT subject), how it was
    authenticated (``kind``) and its scopes."""

    name: str
    scopes: frozenset[str]
    kind: str = "token"  # token | oidc | local
    claims: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, name: str, scopes: Iterable[str], kind: str = "token") -> Principal:
        return cls(name, frozenset(check_scope(s) for s in scopes), kind)

    def allows(self, permission: str) -> bool:
        return any(grants(scope, permission) for scope in self.scopes)

    def require(self, permission: str) -> None:
        """Raise NotAuthorizedError unless the principal has ``permission``."""
        if not self.allows(permission):
            raise NotAuthorizedError(self.name, permission)
