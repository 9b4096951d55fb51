"""One table from tidings' errors to HTTP statuses, and the one error body of the API.

Every refusal is a 4xx with ``{"error": {"type": ..., "field": ..., "reason": ...}}``:
``type`` is the error's class name (``ValidationError``, ``UnknownQueueError``,
``NotAuthorizedError`` ...), ``field`` what was wrong (a request field such as
``priority`` or ``messages[3].send_at``, a header, or null), ``reason`` why. The same
errors the Python API raises, for the same input. A 5xx means the server side failed
(Redis unreachable: 503) or a bug (500, with no detail).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis import exceptions as redis_errors
from starlette.exceptions import HTTPException

from ..core.errors import (
    AccessDeniedError,
    BrokerUnavailableError,
    CampaignConflictError,
    CampaignNotFoundError,
    DatabaseUnavailableError,
    DurabilityError,
    InvalidTokenError,
    MessageNotFoundError,
    NotAuthorizedError,
    QueueFullError,
    QueueNotEmptyError,
    RouteNotFoundError,
    RulesConflictError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    TidingsError,
    UnknownQueueError,
    UntrustedCertificateError,
    ValidationError,
)

log = logging.getLogger("tidings.api")

# The first row whose class the error is an instance of gives its status (most specific
# first). A TidingsError no row names is a 409 (the request was valid; the state refused).
STATUS: list[tuple[type[BaseException], int]] = [
    (InvalidTokenError, 401),
    (NotAuthorizedError, 403),
    (UnknownQueueError, 404),
    (ScheduleNotFoundError, 404),
    (CampaignNotFoundError, 404),
    (MessageNotFoundError, 404),
    (RouteNotFoundError, 404),
    (ScheduleExistsError, 409),
    (ValidationError, 422),
    (QueueFullError, 429),
    (QueueNotEmptyError, 409),
    (CampaignConflictError, 409),
    (RulesConflictError, 409),
    (BrokerUnavailableError, 503),
    (DatabaseUnavailableError, 503),
    (DurabilityError, 503),
    (UntrustedCertificateError, 503),
    (AccessDeniedError, 503),  # the server refused *our* credentials: not the caller's fault
    (redis_errors.ConnectionError, 503),
    (redis_errors.TimeoutError, 503),
    (TidingsError, 409),
]

_HTTP_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               405: "MethodNotAllowed", 413: "BodyTooLarge", 415: "UnsupportedMediaType"}


def status_of(exc: BaseException) -> int:
    """The HTTP status that reports ``exc`` (500: not in the table, a bug)."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def field_of(exc: BaseException) -> str | None:
    if isinstance(exc, ValidationError):
        return exc.field
    if isinstance(exc, InvalidTokenError):
        return "Authorization"
    if isinstance(exc, NotAuthorizedError):
        return "permission"
    return None


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, ValidationError | InvalidTokenError):
        return exc.reason
    return str(exc)


def error_body(kind: str, field: str | None, reason: str, **extra: Any) -> dict[str, Any]:
    """The body of every error response."""
    return {"error": {"type": kind, "field": field, "reason": reason, **extra}}


def error_response(status: int, kind: str, field: str | None, reason: str,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    return Response(orjson.dumps(error_body(kind, field, reason, **extra)), status,
                    headers=headers, media_type="application/json")


def response_of(exc: BaseException) -> Response:
    """The error response of ``exc``: its status, class name, field and reason."""
    status = status_of(exc)
    if status == 500:
        log.error("unexpected error in the HTTP API", exc_info=exc)
        return error_response(500, "InternalError", None,
                              "an unexpected error; the server log has the details")
    headers, extra = None, {}
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
        extra = {"retry_after": exc.retry_after}
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return error_response(status, type(exc).__name__, field_of(exc), reason_of(exc),
                          headers, **extra)


def _location(loc: Any) -> str:
    """``("body", "messages", 3, "priority")`` -> ``messages[3].priority``."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def _request_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return error_response(422, "ValidationError", _location(first.get("loc", ())), reason)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = _HTTP_TYPES.get(exc.status_code, "HTTPError")
    field = "body" if exc.status_code in (400, 413, 415) else None
    return error_response(exc.status_code, kind, field, str(exc.detail), exc.headers)


async def _tidings_error(request: Request, exc: Exception) -> Response:
    return response_of(exc)


def install(api: FastAPI) -> None:
    """Route every error through the table above."""
    api.add_exception_handler(RequestValidationError, _request_invalid)
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(TidingsError, _tidings_error)
    api.add_exception_handler(redis_errors.RedisError, _tidings_error)
    api.add_exception_handler(Exception, _tidings_error)


class BodyTooLarge(Exception):
    """Raised inside a request whose body passed the size limit (answered 413)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"body over {limit} bytes")
