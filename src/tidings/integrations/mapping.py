"""The tidings envelope as another broker's message, and back: one mapping every bridge uses.

Payloads travel as JSON (``application/json``), bytes as they are
(``application/octet-stream``). Headers are carried as headers; ``correlation_id`` and
``traceparent`` are ordinary tidings headers, so they cross unchanged (AMQP also gets the
correlation id as its own property). The tidings message id crosses as the destination's
message id, so a retried publish of one tidings message carries the same id every time and
the far side can drop the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..core.errors import ConfigError, PayloadError
from ..core.message import Message, Priority

JSON = "application/json"
BINARY = "application/octet-stream"
ID_HEADER = "tidings-id"  # the tidings message id, beside the broker's own id field
PRIORITY_HEADER = "tidings-priority"


@dataclass(slots=True, frozen=True)
class Body:
    """A payload encoded for the wire."""

    data: bytes
    content_type: str


def encode_payload(payload: Any) -> Body:
    """``payload`` as bytes: bytes unchanged, anything else as JSON."""
    if isinstance(payload, bytes | bytearray):
        return Body(bytes(payload), BINARY)
    try:
        return Body(orjson.dumps(payload), JSON)
    except TypeError as exc:
        raise PayloadError("payload", f"cannot be sent as JSON: {exc}") from None


def decode_payload(data: bytes, content_type: str | None) -> Any:
    """A payload from the wire: JSON when the content type says so, else the bytes.

    A body labelled JSON that does not parse raises :class:`PayloadError`: the bridge
    rejects it (it can never succeed) instead of retrying it for ever.
    """
    if content_type is not None and content_type.split(";")[0].strip() == JSON:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise PayloadError("payload", f"labelled {JSON} but is not JSON: {exc}") from None
    return bytes(data)


def outgoing_headers(message: Message) -> dict[str, str]:
    """The headers a bridge sends with ``message``: its own, plus its id and priority."""
    return {**message.headers, ID_HEADER: message.id, PRIORITY_HEADER: message.priority.label}


def incoming_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    """Headers of a foreign message as tidings headers (strings), without our own markers."""
    out: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if key in (ID_HEADER, PRIORITY_HEADER) or value is None:
            continue
        out[str(key)] = value.decode() if isinstance(value, bytes) else str(value)
    return out


def priority_from_header(headers: dict[str, Any] | None) -> Priority:
    """The tidings priority a bridged message carried, normal when it carried none."""
    value = (headers or {}).get(PRIORITY_HEADER)
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return Priority.parse(value) if value is not None else Priority.NORMAL
    except ValueError:
        return Priority.NORMAL


def require_text(field: str, value: Any, *, allow_empty: bool = False) -> str:
    """``value`` if it is a string (non-empty unless ``allow_empty``), else ConfigError."""
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError(field, f"must be a non-empty string, got {value!r}")
    return value


def require_positive(field: str, value: Any, *, integer: bool = False) -> float:
    """``value`` if it is a positive number (an int when ``integer``), else ConfigError."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        what = "an int" if integer else "a number"
        raise ConfigError(field, f"must be {what} > 0, got {value!r}")
    return float(value)
