"""One view of a message, for ``tidings inspect`` and ``tidings dlq list`` alike.

Both commands build what they show (and their ``--json``) here, so a dead letter reads the
same numbers in either:

- ``attempts``: failed handler runs so far. For a dead letter, the count its error records,
  which includes the final failure (the stored envelope still holds the count from before
  it); otherwise the envelope's.
- ``deliveries``: how many times the entry was handed to a worker (its lease token). A dead
  letter keeps the count it had when it was parked (None for entries parked before tidings
  recorded it).
- ``error``: the dead letter's error as an object (``type``, ``message``, ``traceback``,
  ``attempts`` ...), not the JSON text it is stored as.

An entry that cannot be read shows its stored ``fields`` as text and its ``decode_error``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.stored import integer

if TYPE_CHECKING:
    from ..core.message import Message
    from ..queues.dead_letters import DeadLetterEntry
    from ..queues.inspection import MessageInfo


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _envelope(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {"created_at": None, "expires_at": None, "headers": None, "payload": None}
    return {"created_at": _iso(message.created_at), "expires_at": _iso(message.expires_at),
            "headers": message.headers, "payload": message.payload}


def dead_letter_view(item: DeadLetterEntry, queue: str) -> dict[str, Any]:
    """A dead letter as ``dlq list`` and ``inspect`` show it."""
    recorded = item.error.get("attempts")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        attempts: int | None = recorded
    else:
        attempts = item.message.attempts if item.message is not None else None
    unreadable = bool(item.decode_error or item.problems)
    return {
        "id": item.message_id, "queue": queue, "state": "dead", "priority": item.lane.label,
        "attempts": attempts, "deliveries": integer(item.fields.get("deliveries")),
        **_envelope(item.message), "dead_at": _iso(item.dead_at), "reason": item.reason,
        "error": item.error, "entry_id": item.entry_id,
        # as DeadLetterEntry.as_dict names them, for scripts written against it
        "message_id": item.message_id, "decode_error": item.decode_error,
        "problems": item.problems, "fields": item.fields if unreadable else None,
    }


def message_view(info: MessageInfo, queue: str) -> dict[str, Any]:
    """A message that is not dead (queued, in flight, delayed, or unreadable)."""
    decode_error = info.decode_error
    message = info.message
    return {
        "id": info.id, "queue": queue, "state": info.state, "priority": info.lane,
        "attempts": message.attempts if message is not None else None,
        "deliveries": info.deliveries, **_envelope(message), "due_at": _iso(info.due_at),
        "decode_error": decode_error,
        "fields": info.fields if decode_error else None,
    }


def as_text(view: dict[str, Any]) -> dict[str, Any]:
    """The view for reading: the error as ``type: message`` and its traceback apart."""
    shown = dict(view)
    error = shown.pop("error", None)
    if error:
        kind, text = error.get("type"), error.get("message")
        shown["error"] = ": ".join(str(p) for p in (kind, text) if p) or None
        shown["traceback"] = error.get("traceback")
    shown.pop("message_id", None)  # the same as id
    if not shown.get("problems"):
        shown.pop("problems", None)
    return shown
