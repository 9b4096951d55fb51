"""The message envelope and its wire encoding.

An envelope is a msgpack map with short keys and a version number. Decoders ignore keys
they do not know and fill defaults for keys that are missing, so a producer can add a field
without breaking consumers that are already running.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

import msgpack

from .errors import EnvelopeError, PayloadError, UnsupportedEnvelopeError, ValidationError

ENVELOPE_VERSION = 1

Payload = Any  # JSON-compatible value or bytes (see check_payload)


class Priority(IntEnum):
    """Priority lanes, highest first; the value is the lane index used on the wire."""

    HIGH = 0
    NORMAL = 1
    LOW = 2

    @classmethod
    def parse(cls, value: Priority | str | int) -> Priority:
        if isinstance(value, Priority):
            return value
        found = _PRIORITY_NAMES.get(value) if isinstance(value, str | int) else None
        if found is not None and not isinstance(value, bool):
            return found
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        raise ValidationError("priority", f"must be one of high, normal, low; got {value!r}")

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = ("high", "normal", "low")  # by lane index (label is on every event's path)
_PRIORITY_NAMES: dict[str | int, Priority] = {
    **{p.name.lower(): p for p in Priority}, **{int(p): p for p in Priority}}

# Bounds of what an envelope may hold. Times are Unix milliseconds from 1970 up to the end
# of year 9999 (what datetime can show; far below 2**53, so Lua's doubles hold them
# exactly); durations at most 100 years; attempts as many as a retry policy allows.
MAX_TIME_MS = 253_402_300_799_999
MAX_DURATION_S = 100 * 365.25 * 86_400
MAX_ATTEMPTS = 1000
MAX_PAYLOAD_DEPTH = 64
# Headers travel with every delivery and are bound into encrypted payloads: keep them small.
MAX_HEADERS, MAX_HEADER_NAME, MAX_HEADER_VALUE = 64, 128, 8192
_MSGPACK_INT = (-(2**63), 2**64 - 1)  # what msgpack can carry


def to_ms(value: datetime, field_name: str) -> int:
    """An aware datetime as Unix ms; a time before 1970 is as past as 1970 itself."""
    if not isinstance(value, datetime):
        raise ValidationError(field_name, "must be a timezone-aware datetime, got "
                              f"{type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValidationError(field_name, "must be a timezone-aware datetime, got a naive one")
    return min(MAX_TIME_MS, max(0, int(value.timestamp() * 1000)))


def from_ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def duration_ms(value: timedelta | float | int, field_name: str) -> int:
    """A duration (seconds or a timedelta) as whole ms; refuses what is not one."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        raise ValidationError(field_name, "must be seconds (int or float) or a timedelta, "
                              f"got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValidationError(field_name, f"must be a finite number of seconds, got {value!r:.40}")
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValidationError(field_name, f"must be between 0 and {MAX_DURATION_S:.0f} s "
                              f"(100 years), got {seconds:g} s")
    return int(seconds * 1000)


def check_attempts(value: Any, field_name: str = "max_attempts") -> int:
    if type(value) is not int or not 1 <= value <= MAX_ATTEMPTS:
        raise ValidationError(field_name, f"must be an int from 1 to {MAX_ATTEMPTS}, got "
                              f"{value!r}")
    return value


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


def encode(message: Message, *, check: bool = True) -> bytes:
    """The envelope of ``message``; ``check`` refuses a payload that is not JSON-compatible.

    Producers check; the worker re-encodes what it read back (a retry) without checking, so
    a payload a foreign producer wrote still moves on instead of failing its settle.
    """
    if check:
        check_payload(message.payload)
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


_PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


def _int_field(doc: dict[Any, Any], key: str, low: int, high: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise EnvelopeError(key, f"must be an int from {low} to {high}, got {value!r}")
    return value


def _text_field(doc: dict[Any, Any], key: str, optional: bool = False) -> Any:
    value = doc.get(key)
    if type(value) is str and value:
        return value
    if optional and value is None:
        return None
    raise EnvelopeError(key, f"must be a non-empty string, got {value!r}")


def decode(raw: bytes) -> Message:
    """Decode and validate an envelope: types and ranges of every field it carries.

    Raises :class:`EnvelopeError` (a ``ValueError``) naming the field for anything that is
    not a valid envelope of this version, and :class:`UnsupportedEnvelopeError` for an
    envelope of a newer version, which this decoder must not guess at.
    """
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise EnvelopeError("envelope", f"not msgpack: {exc}") from None
    if type(doc) is not dict:
        raise EnvelopeError("envelope", f"not a tidings envelope (a {type(doc).__name__})")
    # One pass over what a well-formed envelope holds (this runs for every delivery); an
    # envelope that does not pass it gets the field-by-field check, which names the field.
    get = doc.get
    msg_id, queue, lane, attempts, created = (get("id"), get("q"), get("pr", 1), get("a", 0),
                                              get("c", 0))
    headers, key, not_before, expires, max_attempts = (get("h"), get("k"), get("nb"),
                                                       get("x"), get("ma"))
    version = get("v")
    if (type(version) is int and version == ENVELOPE_VERSION
            and type(msg_id) is str and msg_id and type(queue) is str and queue
            and type(lane) is int and 0 <= lane <= 2
            and type(attempts) is int and 0 <= attempts <= 1_000_000
            and type(created) is int and 0 <= created <= MAX_TIME_MS
            and (key is None or (type(key) is str and key))
            and (not_before is None or (type(not_before) is int
                                        and 0 <= not_before <= MAX_TIME_MS))
            and (expires is None or (type(expires) is int and 0 <= expires <= MAX_TIME_MS))
            and (max_attempts is None or (type(max_attempts) is int
                                          and 1 <= max_attempts <= 1_000_000))
            and (headers is None or _plain_headers(headers))):
        return Message(msg_id, queue, get("p"), headers or {}, _PRIORITIES[lane], key,
                       attempts, created, not_before, expires, max_attempts)
    return _decode_checked(doc)


def _plain_headers(headers: Any) -> bool:
    if type(headers) is not dict:
        return False
    for name, value in headers.items():
        if type(name) is not str or type(value) is not str:
            return False
    return True


def _decode_checked(doc: dict[Any, Any]) -> Message:
    """The field-by-field check: raises the EnvelopeError that names what is wrong."""
    version = doc.get("v")
    if type(version) is not int or version != ENVELOPE_VERSION:
        if type(version) is int and version > ENVELOPE_VERSION:
            raise UnsupportedEnvelopeError(
                "v", f"envelope version {version} is newer than this tidings reads "
                f"({ENVELOPE_VERSION}); upgrade the workers")
        raise EnvelopeError("v", f"must be {ENVELOPE_VERSION}, got {version!r}")
    headers = doc.get("h")
    if headers is None:
        headers = {}
    elif not _plain_headers(headers):
        raise EnvelopeError("h", f"headers must map str to str, got {headers!r:.100}")
    lane = doc.get("pr", 1)
    if type(lane) is not int or not 0 <= lane <= 2:
        raise EnvelopeError("pr", f"must be 0, 1 or 2, got {lane!r}")
    return Message(
        id=_text_field(doc, "id"),
        queue=_text_field(doc, "q"),
        payload=doc.get("p"),
        headers=headers,
        priority=_PRIORITIES[lane],
        idempotency_key=_text_field(doc, "k", optional=True),
        attempts=_int_field(doc, "a", 0, 1_000_000) or 0,
        created_at_ms=_int_field(doc, "c", 0, MAX_TIME_MS) or 0,
        not_before_ms=_int_field(doc, "nb", 0, MAX_TIME_MS),
        expires_at_ms=_int_field(doc, "x", 0, MAX_TIME_MS),
        max_attempts=_int_field(doc, "ma", 1, 1_000_000),
    )


def validate_headers(headers: Any) -> dict[str, str]:
    """A copy of ``headers`` if it maps str to str; ValidationError naming ``headers``."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValidationError("headers", "must be a mapping of str to str, got "
                              f"{type(headers).__name__}")
    if len(headers) > MAX_HEADERS:
        raise ValidationError("headers", f"{len(headers)} headers; at most {MAX_HEADERS}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValidationError("headers", f"must map str to str; bad entry {key!r}: {value!r}")
        if not 0 < len(key) <= MAX_HEADER_NAME:
            raise ValidationError("headers", f"a header name must be 1 to {MAX_HEADER_NAME} "
                                  f"characters; got {len(key)} ({key[:40]!r})")
        if len(value) > MAX_HEADER_VALUE:
            raise ValidationError("headers", f"header {key!r} is {len(value)} characters; at "
                                  f"most {MAX_HEADER_VALUE}")
    return dict(headers)


# -- payloads ------------------------------------------------------------------------------


def check_payload(payload: Any) -> None:
    """Refuse a payload that is not JSON-compatible (bytes are allowed as the whole payload).

    JSON-compatible: None, bool, int (as msgpack carries it), finite float, str, and lists,
    tuples (delivered as lists) and dicts with str keys of those, at most
    :data:`MAX_PAYLOAD_DEPTH` levels deep. Raises :class:`PayloadError` naming the path of
    the first offending value, e.g. ``payload.user.scores[2]``.
    """
    if type(payload) is bytes or _plain_ok(payload, 0):
        return
    problem = _find_problem(payload, "payload", 0)
    if problem is not None:
        raise PayloadError(*problem)


def _plain_ok(value: Any, depth: int) -> bool:
    """The fast check: exact built-in types only; anything else goes to _find_problem.

    Iterative, with the scalars checked inline: this runs for every published message.
    """
    low, high = _MSGPACK_INT
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        kind = type(item)
        if kind is dict:
            if level >= MAX_PAYLOAD_DEPTH:
                return False
            for key, child in item.items():
                if type(key) is not str:
                    return False
                kind = type(child)
                if kind is str or child is None or kind is bool:
                    continue
                if kind is int:
                    if not low <= child <= high:
                        return False
                elif kind is float:
                    if child - child != 0.0:  # NaN and both infinities
                        return False
                else:
                    stack.append((child, level + 1))
        elif kind is list or kind is tuple:
            if level >= MAX_PAYLOAD_DEPTH:
                return False
            stack.extend((child, level + 1) for child in item)
        elif kind is str or item is None or kind is bool:
            continue
        elif kind is int:
            if not low <= item <= high:
                return False
        elif kind is float:
            if item - item != 0.0:
                return False
        else:
            return False
    return True


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]"


def _find_problem(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    """(path, reason) of the first value msgpack would not carry as JSON, or None."""
    if isinstance(value, (str, bool)) or value is None:
        return None
    if isinstance(value, int):
        if _MSGPACK_INT[0] <= value <= _MSGPACK_INT[1]:
            return None
        return path, "int out of range: -2**63 to 2**64-1"
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"{value!r} is not JSON-compatible")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return path, "bytes are allowed only as the whole payload"
    if depth >= MAX_PAYLOAD_DEPTH:
        return path, f"nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"dict keys must be strings, got {key!r}"
            found = _find_problem(item, _child(path, key), depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_problem(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
        return None
    return path, f"{type(value).__name__} is not JSON-compatible"




