"""Writing stored entries by hand, well or badly formed, as another tool (or a bug) might.

For the operator-tool tests: what inspect and the DLQ tools must survive.
"""

from __future__ import annotations

from typing import Any

import msgpack

from tidings import Message, Queue
from tidings.core.message import encode, new_message_id, now_ms


def envelope(queue: Queue, payload: Any = "x", **changes: Any) -> bytes:
    """A valid envelope of ``queue``, with fields of the msgpack map replaced or removed
    (a value of ``...`` removes the field)."""
    doc = msgpack.unpackb(encode(Message(new_message_id(), queue.name, payload,
                                         created_at_ms=now_ms())))
    for name, value in changes.items():
        if value is ...:
            doc.pop(name, None)
        else:
            doc[name] = value
    return bytes(msgpack.packb(doc, use_bin_type=True))


async def add_dead_letter(queue: Queue, fields: dict[str, Any], *,
                          index: bool = True) -> str:
    """Append ``fields`` to the DLQ stream as they are; index them under their ``i``."""
    client = queue.app.broker.client
    entry_id = (await client.xadd(queue.keys[5], fields)).decode()
    if index and "i" in fields:
        await client.hset(queue.keys[7], fields["i"], f"x:{entry_id}")
    return entry_id


def dead_fields(message_id: str, m: Any = None, **extra: Any) -> dict[str, Any]:
    """The fields the dead_letter script writes, with ``m`` (None: none) and overrides."""
    fields: dict[str, Any] = {"i": message_id, "reason": "max_attempts",
                              "error": '{"type": "TimeoutError", "attempts": 1}',
                              "lane": "1", "dead_at": str(now_ms())}
    if m is not None:
        fields["m"] = m
    for name, value in extra.items():
        if value is ...:
            fields.pop(name, None)
        else:
            fields[name] = value
    return fields


async def add_to_lane(queue: Queue, fields: dict[str, Any], lane: int = 1) -> str:
    """Append ``fields`` to a lane stream; index them under their ``i``."""
    client = queue.app.broker.client
    entry_id = (await client.xadd(queue.keys[lane], fields)).decode()
    if "i" in fields:
        await client.hset(queue.keys[7], fields["i"], f"{lane}:{entry_id}")
    return entry_id


async def add_delayed(queue: Queue, message_id: str, body: bytes, due: float) -> None:
    """A delayed message with ``body`` stored as it is (normally lane|expires|envelope)."""
    client = queue.app.broker.client
    await client.hset(queue.keys[4], message_id, body)
    await client.zadd(queue.keys[3], {message_id: due})
    await client.hset(queue.keys[7], message_id, "d")
