"""Reading what is stored, when it may be malformed: for inspect and the DLQ tools.

Operator tools must show what they can of an entry that another tool (or a bug) wrote
badly, never stop on it. These helpers read one stored value each and return None, or the
decode error as text, instead of raising.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ..core.message import Message, Priority, decode, from_ms


def text(value: Any) -> str:
    """A stored value as text; bytes that are not UTF-8 keep their bytes as escapes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def text_fields(fields: dict[Any, Any]) -> dict[str, str]:
    """A stream entry's fields, names and values as text (for showing, not decoding)."""
    return {text(name): text(value) for name, value in fields.items()}


def decoded(raw: Any) -> tuple[Message | None, str | None]:
    """The envelope in ``raw``, or None and why it could not be decoded."""
    if raw is None:
        return None, "the entry has no envelope (no 'm' field)"
    if not isinstance(raw, bytes | bytearray):
        return None, f"the envelope is a {type(raw).__name__}, not bytes"
    try:
        return decode(bytes(raw)), None
    except (ValueError, TypeError, OverflowError) as exc:  # decode's contract is ValueError
        return None, str(exc) or type(exc).__name__


def integer(value: Any) -> int | None:
    """A stored decimal integer (bytes, str, int or a finite whole float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    try:
        return int(text(value).strip())
    except ValueError:
        return None


def lane_of(value: Any) -> Priority | None:
    """A stored lane number (0, 1, 2) as its Priority, else None."""
    lane = integer(value)
    return Priority(lane) if lane is not None and 0 <= lane <= 2 else None


def time_of_ms(value: Any) -> datetime | None:
    """A stored Unix time in milliseconds as an aware datetime, else None (out of range too)."""
    ms = integer(value)
    if ms is None:
        return None
    try:
        return from_ms(ms)
    except (OverflowError, OSError, ValueError):
        return None
