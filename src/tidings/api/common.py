"""What the routes share: the caller, resolving a queue, times with a zone, responses."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.responses import Response

from ..core.errors import UnknownQueueError, ValidationError
from ..queues.queue import Queue
from ..scheduling.recurrence import resolve_local_time
from .auth import Access
from .models import ErrorOut


async def _access(request: Request) -> Access:
    access: Access = await request.app.state.tidings_guard(request)
    return access


Caller = Annotated[Access, Depends(_access)]


class JSON(Response):
    """orjson-encoded JSON (datetimes as ISO 8601, dataclasses as objects)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, default=str)
        except TypeError:  # an integer past 64 bits (orjson's limit): the slower encoder
            return json.dumps(content, default=str, separators=(",", ":")).encode()


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": what}
    for status, what in ((401, "no or invalid bearer token"), (403, "permission missing"),
                         (404, "not found"), (409, "refused in the current state"),
                         (422, "invalid input: the field and the reason"))}


def doc(model: Any = None, status: int = 200, **extra: Any) -> dict[str, Any]:
    """Route options: the documented response ``model`` (returned as is, not re-validated)
    and the error responses."""
    responses: dict[int | str, dict[str, Any]] = dict(_ERRORS)
    if model is not None:
        responses[status] = {"model": model}
    return {"response_model": None, "status_code": status, "response_class": JSON,
            "responses": responses, **extra}


async def queue_of(access: Access, name: str) -> Queue:
    """The plain queue ``name`` (declared on the app or known to the server), else 404."""
    found = await access.app.find_queue(name)
    if found is None:
        raise UnknownQueueError(name)
    return found


def aware(value: datetime | None, zone: str | None, field: str) -> datetime | None:
    """``value`` with its zone: a wall time in ``zone`` (first instant of a repeated hour,
    the next valid one of a skipped hour), or the instant it already names."""
    if zone is None or value is None:
        return value
    if value.utcoffset() is not None:
        raise ValidationError("zone", f"{field} has an offset already; give zone only with "
                              "a wall time")
    return resolve_local_time(value, zone)[0]
