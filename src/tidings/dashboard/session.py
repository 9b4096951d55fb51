"""Logging in with a token, the session it opens, and the CSRF token of every form.

The session lives in Starlette's signed cookie (itsdangerous; HttpOnly, SameSite=Strict,
Secure when configured). It holds who logged in (name, kind, scopes) and, never the token
itself, only what lets each request check the login still stands: an API token's id (a
revoked token ends its sessions at the next request) or an OIDC token's expiry.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidTokenError
from ..security.principals import Principal
from ..security.tokens import PREFIX

if TYPE_CHECKING:
    from starlette.requests import Request

    from ..app import Tidings
    from ..security.auth import Authenticator

USER = "user"
CSRF = "csrf"
FLASH = "flash"


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (a login form needs one too)."""
    token = request.session.get(CSRF)
    if not isinstance(token, str):
        token = request.session[CSRF] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request: Request, sent: Any) -> bool:
    """Whether ``sent`` is the session's CSRF token (compared in constant time)."""
    expected = request.session.get(CSRF)
    return (isinstance(expected, str) and isinstance(sent, str)
            and hmac.compare_digest(expected.encode(), sent.encode()))


async def log_in(request: Request, authenticator: Authenticator, token: str) -> Principal:
    """Authenticate ``token`` and open a session for its principal (InvalidTokenError)."""
    token = token.strip()
    if not token:
        raise InvalidTokenError("no token given")
    principal = await authenticator.authenticate(token)
    user: dict[str, Any] = {"name": principal.name, "kind": principal.kind,
                            "scopes": sorted(principal.scopes)}
    if token.startswith(PREFIX):
        user["token_id"] = token[len(PREFIX):].partition("_")[0]
    expires = principal.claims.get("exp")
    if isinstance(expires, int | float):
        user["exp"] = float(expires)
    request.session.clear()  # a fresh session (and CSRF token) at each login
    request.session[USER] = user
    csrf_token(request)
    return principal


def log_out(request: Request) -> None:
    request.session.clear()


async def principal_of(request: Request, app: Tidings) -> Principal | None:
    """The logged-in principal, or None (never logged in, token revoked, JWT expired)."""
    user = request.session.get(USER)
    if not isinstance(user, dict):
        return None
    try:
        principal = Principal.of(str(user["name"]), list(user["scopes"]), str(user["kind"]))
    except (KeyError, TypeError, ValueError):
        return None
    if "exp" in user and app.clock.time() >= float(user["exp"]):
        request.session.pop(USER, None)
        return None
    if "token_id" in user:
        await app.connect()
        if not await app.broker.client.hexists(app.key_space.tokens, str(user["token_id"])):
            request.session.pop(USER, None)
            return None
    return principal


def flash(request: Request, message: str, kind: str = "ok") -> None:
    """A message shown once, on the next page rendered."""
    request.session[FLASH] = {"message": message, "kind": kind}


def take_flash(request: Request) -> dict[str, str] | None:
    found = request.session.pop(FLASH, None)
    return found if isinstance(found, dict) else None
