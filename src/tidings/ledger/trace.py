"""Tracing a message: its current state and the timeline of its events, from the ledger.

A lookup by message id reads one day partition (the day is in the id); by correlation id,
idempotency key or data subject it goes through that column's index, then reads the events
of the messages found in their own partitions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..core.errors import ValidationError
from . import queries
from .records import check_message_id, id_day


@dataclass(slots=True)
class TraceEvent:
    """One thing that happened to a message."""

    kind: str
    queue: str
    at: datetime
    attempt: int
    actor: str | None  # the publishing process, or the consumer that handled it
    duration: float | None
    delay: float | None
    reason: str | None
    error: str | None


@dataclass(slots=True)
class MessageTrace:
    """A message's current state (from the ``messages`` row) and its timeline."""

    message_id: str
    queue: str
    state: str
    priority: str | None = None
    attempts: int = 0
    correlation_id: str | None = None
    idempotency_key: str | None = None
    subject: str | None = None
    publisher: str | None = None
    consumer: str | None = None
    payload: Any = None
    payload_hash: str | None = None
    reason: str | None = None
    error: str | None = None
    published_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[TraceEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trace_of(row: Any) -> MessageTrace:
    payload = row["payload"]
    return MessageTrace(
        row["message_id"], row["queue"], row["state"], row["priority"], row["attempts"],
        row["correlation_id"], row["idempotency_key"], row["subject"], row["publisher"],
        row["consumer"], None if payload is None else orjson.loads(payload),
        row["payload_hash"], row["reason"], row["error"], row["published_at"],
        row["updated_at"])


async def trace(conn: Any, message_id: str | None = None, *, correlation_id: str | None = None,
                idempotency_key: str | None = None, subject: str | None = None,
                limit: int = 100) -> list[MessageTrace]:
    """The traces of the messages one of the arguments names (exactly one must be given),
    oldest first, at most ``limit``."""
    given = {name: value for name, value in (
        ("message_id", message_id), ("correlation_id", correlation_id),
        ("idempotency_key", idempotency_key), ("subject", subject)) if value is not None}
    if len(given) != 1:
        raise ValidationError("message_id", "give exactly one of a message id, "
                              "correlation_id, idempotency_key or subject")
    if type(limit) is not int or not 1 <= limit <= 10_000:
        raise ValidationError("limit", f"must be an int from 1 to 10000, got {limit!r}")
    (name, value), = given.items()
    if not isinstance(value, str) or not value:
        raise ValidationError(name, f"must be a non-empty string, got {value!r}")
    if name == "message_id":
        check_message_id(value)
        row = await conn.fetchrow(queries.MESSAGE_BY_ID, id_day(value), value)
        found = [_trace_of(row)] if row is not None else []
        keys = [(id_day(value), value)]
    else:
        found = [_trace_of(r) for r in await conn.fetch(queries.MESSAGES_BY[name], value,
                                                         limit)]
        keys = [(id_day(t.message_id), t.message_id) for t in found]
    by_id = {t.message_id: t for t in found}
    rows = await conn.fetch(queries.EVENTS_OF, [k[0] for k in keys], [k[1] for k in keys])
    for r in rows:
        item = by_id.get(r["message_id"])
        if item is None:  # events whose message row is not written yet
            item = by_id[r["message_id"]] = MessageTrace(r["message_id"], r["queue"], r["kind"])
            found.append(item)
        item.events.append(TraceEvent(r["kind"], r["queue"], r["at"], r["attempt"], r["actor"],
                                      r["duration"], r["delay"], r["reason"], r["error"]))
    return found
