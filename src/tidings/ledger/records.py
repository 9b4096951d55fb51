"""Ledger records: what the writer keeps of one lifecycle event, and the rows made of them.

A record is a tuple of plain values (so a batch can wait in a Redis stream as msgpack
while PostgreSQL is down); :func:`event_rows` and :func:`message_rows` turn a batch into
the rows of the ``events`` table and the collapsed current state of each message.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from ..core.errors import ValidationError
from ..core.events import Event, EventKind
from ..core.message import Message

# Lifecycle kinds the ledger records (breaker, rate-limit and alert events are not about
# one message).
RECORDED = frozenset({
    EventKind.PUBLISHED, EventKind.DELIVERED, EventKind.ACKED, EventKind.RETRIED,
    EventKind.SNOOZED, EventKind.RELEASED, EventKind.DEAD_LETTERED, EventKind.EXPIRED,
    EventKind.LEASE_LOST})

_KIND_TEXT = {kind: kind.value for kind in EventKind}  # .value is a slow property
_CROCKFORD = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}
_EPOCH = date(1970, 1, 1)
Record = tuple[Any, ...]  # see the field order in make_record
EVENT_COLUMNS = ("day", "message_id", "event_id", "kind", "queue", "at", "attempt", "actor",
                 "duration", "delay", "reason", "error")


def id_day(message_id: str) -> date:
    """The UTC day a message id (a ULID) was made; ValidationError if it is not one.

    Cached by the id's first 8 digits (its second): this runs for every event written.
    """
    day = _DAYS.get(message_id[:8])
    if day is None or len(message_id) != 26:
        check_message_id(message_id)
        if len(_DAYS) > 100_000:
            _DAYS.clear()
        day = _DAYS[message_id[:8]] = _EPOCH + timedelta(
            days=int(message_id[:10].upper().translate(_B32), 32) // 86_400_000)
    return day


def check_message_id(message_id: str) -> None:
    if len(message_id) != 26 or not all(c in _CROCKFORD for c in message_id.upper()):
        raise ValidationError("message_id", f"not a tidings message id (a 26-character "
                              f"ULID): {message_id[:40]!r}")


_DAYS: dict[str, date] = {}


def subject_of(message: Message, path: str | None) -> str | None:
    """The data subject ``path`` ("payload.a.b" or "header.name") names in ``message``."""
    if path is None:
        return None
    where, _, rest = path.partition(".")
    value: Any
    if where == "header":
        value = message.headers.get(rest)
    else:
        value = message.payload
        for part in rest.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    return None if value is None or isinstance(value, dict | list) else str(value)


def payload_fields(payload: Any, mode: str) -> tuple[str | None, str | None]:
    """(payload as JSON text, SHA-256 of it) as ``mode`` ("none", "hash", "full") keeps."""
    if mode == "none":
        return None, None
    if isinstance(payload, bytes):  # bytes payloads are kept as their hash only
        return None, hashlib.sha256(payload).hexdigest()
    text = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(text.encode()).hexdigest()
    return (text if mode == "full" else None), digest


def lean_record(event: Event, message: Message | None, actor: str | None, event_id: int,
                with_payload: bool, subject_path: str | None) -> Record:
    """What the worker keeps of ``event``: plain values and the payload object itself (the
    JSON text and hash are made by whoever writes it, off the worker's path)."""
    payload = subject = key = None
    keep = False
    if message is not None:
        key = message.idempotency_key
        if subject_path is not None:
            subject = subject_of(message, subject_path)
        if with_payload and (event.kind is EventKind.PUBLISHED or message.delivery <= 1):
            payload, keep = message.payload, True
    return (_KIND_TEXT[event.kind], event.queue, event.message_id, event_id, event.timestamp,
            event.attempt, actor, event.duration, event.delay, event.reason, event.error,
            event.priority, event.correlation_id, key, subject, payload, keep)


def full_record(lean: Sequence[Any], mode: str) -> Record:
    """A lean record with its payload as ``mode`` keeps it: (JSON text, SHA-256)."""
    text, digest = payload_fields(lean[15], mode) if lean[16] else (None, None)
    return (*lean[:15], text, digest)


def make_record(event: Event, message: Message | None, actor: str | None,
                mode: str, subject_path: str | None) -> Record:
    """The full record of ``event`` (``message``: the message it is about, when known)."""
    return full_record(lean_record(event, message, actor, int.from_bytes(os.urandom(8), "big")
                                   >> 1, mode != "none", subject_path), mode)


_B32 = str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def event_rows(records: Iterable[Record]) -> list[tuple[Any, ...]]:
    """Rows of the ``events`` table (columns :data:`EVENT_COLUMNS`)."""
    return [(id_day(r[2]), r[2], r[3], r[0], r[1], _at(r[4]), r[5], r[6], r[7], r[8], r[9],
             r[10]) for r in records]


MESSAGE_COLUMNS = ("day", "message_id", "queue", "state", "priority", "attempts",
                   "correlation_id", "idempotency_key", "subject", "publisher", "consumer",
                   "payload", "payload_hash", "reason", "error", "published_at", "updated_at")


def message_rows(records: Sequence[Record]) -> list[list[Any]]:
    """One row per message of the batch: its latest state, and every fact any event gave
    (a published event may come after the delivery, from another process)."""
    rows: dict[str, list[Any]] = {}
    for r in sorted(records, key=lambda r: r[4]):
        msg_id = r[2]
        published = r[0] == "published"
        row = rows.get(msg_id)
        if row is None:
            row = rows[msg_id] = [id_day(msg_id), msg_id, r[1], r[0], r[11], r[5], r[12],
                                  r[13], r[14], None, None, r[15], r[16], r[9], r[10],
                                  None, _at(r[4])]
        else:
            row[3], row[5], row[13], row[14], row[16] = r[0], max(row[5], r[5]), r[9], r[10], \
                _at(r[4])
            for index, value in ((4, r[11]), (6, r[12]), (7, r[13]), (8, r[14]), (11, r[15]),
                                 (12, r[16])):
                if row[index] is None:
                    row[index] = value
        if published:
            row[9], row[15] = r[6], _at(r[4])
        elif r[6] is not None:
            row[10] = r[6]
    return list(rows.values())


def columns(rows: Sequence[Sequence[Any]], count: int) -> list[list[Any]]:
    """Rows as ``count`` column arrays (for one ``unnest`` statement)."""
    return [[row[i] for row in rows] for i in range(count)]
