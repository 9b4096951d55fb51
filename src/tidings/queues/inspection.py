"""Inspecting one message: where it is and what it holds, even when it was stored badly.

Behind :meth:`Broker.inspect` (``queue.inspect``, ``tidings inspect``). An operator looks
at a message precisely when something is wrong with it, so nothing stored can make this
raise: an envelope that does not decode, a missing field, an index value that is not a
location, a malformed delayed body are reported in the result instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ..engine.broker import raise_if_denied
from .queue import GROUP, LANE_NAMES, MessageInfo
from .stored import decoded, integer, lane_of, text, text_fields, time_of_ms

if TYPE_CHECKING:
    from ..engine.broker import Broker
    from .queue import Queue


@dataclass(slots=True)
class InspectedMessage(MessageInfo):
    """A :class:`MessageInfo` with what was stored, to show what could not be read.

    ``fields``: the stored fields as text (a stream entry's fields; for a delayed message
    its ``lane``, ``expires`` and ``envelope``; for an unreadable location the ``index``
    value). ``decode_error``: why the envelope, or the location, could not be read (then
    ``message`` is None; ``state`` is "unknown" when the location itself is unreadable).
    """

    fields: dict[str, str] = field(default_factory=dict)
    decode_error: str | None = None


async def inspect_message(broker: Broker, queue: Queue, message_id: str) -> InspectedMessage | None:
    """What :meth:`Broker.inspect` returns; None when the index does not know the id, or
    the message moved on between two reads (acked, promoted, replayed)."""
    where = ""
    try:
        stored = await broker.client.hget(queue.keys[7], message_id)
        if stored is None:
            return None
        where = text(stored)
        if where == "d":
            return await _delayed(broker, queue, message_id)
        if where.startswith("x:"):
            return await _dead(broker, queue, message_id, where[2:])
        lane_text, sep, entry_id = where.partition(":")
        lane = lane_of(lane_text) if sep else None
        if lane is None:
            return _unreadable(message_id, where, "is not a location (d, x:<entry id> or "
                               "<lane 0-2>:<entry id>)")
        return await _in_lane(broker, queue, message_id, int(lane), entry_id)
    except ResponseError as exc:  # an entry id the server refuses, a key of the wrong type
        raise_if_denied(exc, broker.user, f"inspect {message_id} in {queue.name}")
        return _unreadable(message_id, where, f"could not be read: {exc}")


def _unreadable(message_id: str, where: str, reason: str) -> InspectedMessage:
    return InspectedMessage(message_id, "unknown", None, fields={"index": where},
                            decode_error=f"index entry {where!r} {reason}")


async def _delayed(broker: Broker, queue: Queue, message_id: str) -> InspectedMessage | None:
    k = queue.keys
    body, due = await asyncio.gather(broker.client.hget(k[4], message_id),
                                     broker.client.zscore(k[3], message_id))
    if body is None:
        return None
    lane_part, _, rest = body.partition(b"|")
    expires, sep, raw = rest.partition(b"|")
    if sep:
        fields = {"lane": text(lane_part), "expires": text(expires), "envelope": text(raw)}
        message, error = decoded(raw)
        lane = lane_of(lane_part)
    else:
        fields, lane = {"body": text(body)}, None
        message, error = None, "the delayed body is not lane|expires|envelope"
    return InspectedMessage(message_id, "delayed", message, lane.label if lane else None,
                            time_of_ms(due), fields=fields, decode_error=error)


async def _dead(broker: Broker, queue: Queue, message_id: str,
                entry_id: str) -> InspectedMessage | None:
    entries = await broker.client.xrange(queue.keys[5], entry_id, entry_id)
    if not entries:
        return None
    stored: dict[Any, Any] = entries[0][1]
    fields = text_fields(stored)
    message, error = decoded(stored.get(b"m"))
    lane = lane_of(stored.get(b"lane", b"1"))
    return InspectedMessage(
        message_id, "dead", message, lane.label if lane else None,
        dead_letter={key: value for key, value in fields.items() if key not in ("m", "i")},
        fields=fields, decode_error=error)


async def _in_lane(broker: Broker, queue: Queue, message_id: str, lane: int,
                   entry_id: str) -> InspectedMessage | None:
    k = queue.keys
    entries = await broker.client.xrange(k[lane], entry_id, entry_id)
    if not entries:
        return None
    try:
        pending = await broker.client.xpending_range(k[lane], GROUP, entry_id, entry_id, 1)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        pending = []  # no consumer group yet: nobody can hold it
    deliveries = await broker.client.hget(k[6], f"{lane}{entry_id}")
    stored: dict[Any, Any] = entries[0][1]
    message, error = decoded(stored.get(b"m"))
    if message is not None:
        message.entry_id, message.lane = entry_id, lane
    return InspectedMessage(message_id, "in_flight" if pending else "queued", message,
                            LANE_NAMES[lane], deliveries=integer(deliveries) or 0,
                            fields=text_fields(stored), decode_error=error)
