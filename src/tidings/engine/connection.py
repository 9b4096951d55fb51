"""The client side of the connection: fast command packing, and refusals that are final.

``TRANSIENT`` is what every loop retries (the server down, a connection reset, a timeout);
a refusal of credentials, permissions or a certificate is translated here, where the
connection is made, into tidings' typed errors, which are not ConnectionErrors, so no
``except TRANSIENT`` ever retries one as an outage.
"""

from __future__ import annotations

import ssl
from typing import Any

import hiredis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.errors import (
    AccessDeniedError,
    AuthenticationFailedError,
    ClientCertificateError,
    PermissionDeniedError,
    UntrustedCertificateError,
)

TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class _HiredisPacking:
    """Packs commands with hiredis' C encoder instead of redis-py's Python one.

    redis-py spends about 2 us per argument building a command; a publish chunk or an ack
    batch has thousands of arguments, so this is most of the client's cost per message.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # redis-py sends some commands as one string ("CLIENT SETINFO"); split like it does.
        if isinstance(first, (str, bytes)) and len(first.split()) > 1:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _RefusalsAreFinal:
    """Turns a refusal met while connecting into tidings' typed error, at the source.

    redis-py reports a wrong or missing password (WRONGPASS, NOAUTH) and an untrusted TLS
    certificate as ConnectionErrors, which every ``except TRANSIENT`` would retry as an
    outage. Raised here, as errors that are not ConnectionErrors, no loop retries them.
    """

    username: str | None

    async def connect(self) -> None:
        try:
            await super().connect()  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            refusal = refusal_of(exc, getattr(self, "username", None) or "default",
                                 "connecting")
            if refusal is not None:
                raise refusal from exc
            certificate = _untrusted_certificate(exc)
            if certificate is not None:
                raise UntrustedCertificateError(self._server(), certificate) from exc
            refused = _refused_client_certificate(exc)
            if refused is not None:
                raise ClientCertificateError(self._server(), refused) from exc
            raise

    def _server(self) -> str:
        path = getattr(self, "path", None)
        return str(path) if path else f"{getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (redis-py re-raises some errors as ConnectionErrors)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _untrusted_certificate(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
        if "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return str(cause)
    return None


# TLS alerts a server sends when it rejects the client's certificate (or its absence).
_CLIENT_ALERTS = ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE",
                  "UNSUPPORTED_CERTIFICATE", "CERTIFICATE_UNKNOWN")


def _refused_client_certificate(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        if any(f"ALERT_{alert}" in str(cause) for alert in _CLIENT_ALERTS):
            return str(cause)
    return None


# How servers word an ACL refusal: NOPERM replies (Redis, Valkey), and the errors a script
# gets for a command or key its user may not touch (Redis 7.0; Valkey says "ACL failure").
_DENIED_IN_SCRIPT = ("The user executing the script can't", "ACL failure in script")


def refusal_of(exc: BaseException, user: str, what: str = "") -> AccessDeniedError | None:
    """The typed error for a refusal of credentials or permissions, else None.

    ``user`` is the server user we act as; ``what`` says what we were doing (a script's
    name, a command), added to the server's own words, which name the command or key.
    """
    for cause in _causes(exc):
        if isinstance(cause, AccessDeniedError):
            return cause
        detail = str(cause)
        where = f" ({what})" if what else ""
        if isinstance(cause, AuthenticationError) or detail.startswith(("WRONGPASS", "NOAUTH")):
            return AuthenticationFailedError(
                user, f"{detail}{where}; check the user and password in TIDINGS_REDIS_URL")
        if (isinstance(cause, NoPermissionError) or "NOPERM" in detail
                or any(words in detail for words in _DENIED_IN_SCRIPT)):
            return PermissionDeniedError(user, f"{detail}{where}")
    return None


def raise_if_denied(exc: BaseException, user: str, what: str = "") -> None:
    """Raise PermissionDeniedError (or AuthenticationFailedError) if ``exc`` is a refusal.

    For the ``except ResponseError`` of a loop: call it first, so an ACL refusal (NOPERM)
    surfaces at once as a typed error instead of being retried or logged as a server
    hiccup; anything else returns and the caller handles ``exc`` as before.
    """
    refusal = refusal_of(exc, user, what)
    if refusal is not None:
        raise refusal from exc


_packed_classes: dict[type, type] = {}


def with_fast_packing(connection_class: type) -> type:
    if connection_class not in _packed_classes:
        _packed_classes[connection_class] = type(
            f"Packed{connection_class.__name__}",
            (_HiredisPacking, _RefusalsAreFinal, connection_class), {})
    return _packed_classes[connection_class]
