"""The message envelope and its wire encoding.

An envelope is a msgpack map with short keys and a version number. Decoders ignore keys
they do not know and fill defaults for keys that are missing, so a producer can add a field
without breaking consumers that are already running.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

import msgpack

from .errors import PayloadError, ValidationError

ENVELOPE_VERSION = 1

Payload = Any  # JSON-compatible value or bytes


class Priority(IntEnum):
    """Priority lanes, highest first; the value is the lane index used on the wire."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2:
            return cls(value)
        raise ValidationError("priority", f"must be one of high, normal, low; got {value!r}")

    @property
    def label(self) -> str:
        return self.name.lower()


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> two characters
_id_lock = threading.Lock()
_last_id = [0, 0]  # milliseconds, random part of the last id made in this process


def new_message_id() -> str:
    """A ULID (Crockford base32, 26 characters) that sorts by creation time.

    Monotonic within a process: ids made in the same millisecond increment the random part,
    so a batch keeps its order. Hand-written because python-ulid costs 2-4x as much, and
    this runs once per published message.
    """
    ms = time.time_ns() // 1_000_000
    with _id_lock:
        if ms <= _last_id[0]:  # same millisecond (or the clock stepped back)
            ms, rand = _last_id[0], _last_id[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_id[0], _last_id[1] = ms, rand
    value = (ms << 80) | rand
    pairs = _PAIRS
    out = [pairs[(value >> shift) & 1023] for shift in range(120, -1, -10)]
    return "".join(out)


# base64.b32encode's alphabet, mapped onto Crockford's by bytes.translate.
_FROM_RFC4648 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def new_message_ids_at(created_ms: int, n: int) -> Iterator[str]:
    """``n`` ULIDs for one instant ``created_ms``, made in bulk.

    For producers that stamp a whole batch with one creation time (campaign chunks), where
    :func:`new_message_id` per id would cost more than anything else per message: the 80
    random bits of each id are exactly 16 base32 digits, which ``b32encode`` produces in C.
    Unlike :func:`new_message_id`, ids of one batch are not ordered among themselves.
    """
    # The 48-bit timestamp is the first 10 digits: five 10-bit pairs.
    stamp = "".join(_PAIRS[(created_ms >> shift) & 1023] for shift in range(40, -1, -10))
    digits = base64.b32encode(os.urandom(10 * n)).translate(_FROM_RFC4648).decode()
    for i in range(0, 16 * n, 16):
        yield stamp + digits[i:i + 16]


def to_ms(value: datetime, field_name: str) -> int:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValidationError(field_name, "must be a timezone-aware datetime, got a naive one")
    return int(value.timestamp() * 1000)


def from_ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def duration_ms(value: timedelta | float | int, field_name: str) -> int:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise ValidationError(field_name, f"must not be negative, got {seconds} s")
    return int(seconds * 1000)


@dataclass(slots=True)
class Message:
    """One message as a handler sees it.

    ``attempts`` counts the attempts that already failed (0 on first delivery);
    ``delivery`` is the authoritative delivery count of this stream entry.
    """

    id: str
    queue: str
    payload: Payload
    headers: dict[str, str] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    idempotency_key: str | None = None
    attempts: int = 0
    created_at_ms: int = 0
    not_before_ms: int | None = None
    expires_at_ms: int | None = None
    max_attempts: int | None = None
    delivery: int = 0
    # Where the delivered copy lives; set by the worker, used to settle it.
    entry_id: str = ""
    lane: int = 1
    # Outcome chosen inside a batch handler (see Message.retry / dead_letter / snooze).
    outcome: BaseException | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_at_ms / 1000, UTC)

    @property
    def expires_at(self) -> datetime | None:
        return from_ms(self.expires_at_ms)

    @property
    def not_before(self) -> datetime | None:
        return from_ms(self.not_before_ms)

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get("correlation_id")

    # Per-message outcomes for batch handlers: the batch settles each message on its own.
    def retry(self, delay: timedelta | float | None = None, reason: str = "retry") -> None:
        from .errors import Retry

        self.outcome = Retry(delay, reason)

    def snooze(self, delay: timedelta | float) -> None:
        from .errors import Snooze

        self.outcome = Snooze(delay)

    def dead_letter(self, reason: str) -> None:
        from .errors import DeadLetter

        self.outcome = DeadLetter(reason)

    def fail(self, error: BaseException) -> None:
        """Mark as failed with ``error``; it goes through the retry policy."""
        self.outcome = error


def encode(message: Message) -> bytes:
    doc: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "id": message.id,
        "q": message.queue,
        "p": message.payload,
        "pr": int(message.priority),
        "a": message.attempts,
        "c": message.created_at_ms,
    }
    if message.headers:
        doc["h"] = message.headers
    if message.idempotency_key is not None:
        doc["k"] = message.idempotency_key
    if message.not_before_ms is not None:
        doc["nb"] = message.not_before_ms
    if message.expires_at_ms is not None:
        doc["x"] = message.expires_at_ms
    if message.max_attempts is not None:
        doc["ma"] = message.max_attempts
    try:
        return msgpack.packb(doc, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError("payload", f"not serializable: {exc}") from None


def decode(raw: bytes) -> Message:
    """Decode an envelope; raises ValueError for anything that is not one."""
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ValueError(f"undecodable envelope: {exc}") from None
    if not isinstance(doc, dict) or "id" not in doc or "q" not in doc:
        raise ValueError("undecodable envelope: not a tidings envelope")
    return Message(
        id=doc["id"],
        queue=doc["q"],
        payload=doc.get("p"),
        headers=doc.get("h") or {},
        priority=Priority(doc.get("pr", 1)),
        idempotency_key=doc.get("k"),
        attempts=doc.get("a", 0),
        created_at_ms=doc.get("c", 0),
        not_before_ms=doc.get("nb"),
        expires_at_ms=doc.get("x"),
        max_attempts=doc.get("ma"),
    )


def validate_headers(headers: dict[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("headers", f"must map str to str; bad entry {key!r}: {value!r}")
    return dict(headers)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def random_token() -> str:
    return os.urandom(6).hex()
