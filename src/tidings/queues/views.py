"""One view of a message, for ``tidings inspect``, ``tidings dlq list`` and the HTTP API.

They build what they show (and their ``--json``) here, so a dead letter reads the
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
    from .dead_letters import DeadLetterEntry
    from .inspection import MessageInfo
    from .queue import Queue

ENCRYPTED_HEADER = "enc"  # tidings.security.encryption's algorithm header


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _envelope(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {"created_at": None, "expires_at": None, "headers": None, "payload": None,
                "encrypted": False}
    encrypted = ENCRYPTED_HEADER in message.headers  # ciphertext: never shown
    return {"created_at": _iso(message.created_at), "expires_at": _iso(message.expires_at),
            "headers": message.headers, "payload": None if encrypted else message.payload,
            "encrypted": encrypted}


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


async def view_of(queue: Queue, message_id: str) -> dict[str, Any] | None:
    """Where ``message_id`` is in ``queue`` and what it holds (a dead letter with its
    error), or None if the queue does not know it."""
    info = await queue.inspect(message_id)
    if info is None:
        return None
    if info.state == "dead":
        item = await queue.dlq.get(message_id)  # the record dlq list shows
        if item is not None:
            return dead_letter_view(item, queue.name)
    return message_view(info, queue.name)


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
