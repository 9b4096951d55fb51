"""Typed calls of the queue scripts: KEYS from a :class:`QueueKeys`, ARGV built by name.

Each function mirrors the header of its ``engine/lua/<name>.lua`` (what it takes, what it
returns). Calls that the broker runs with retries or durability are returned as a
:data:`ScriptCall`; the worker's hot calls run directly on a client. The scripts are looked
up by module name at call time, so tests can stand a failing one in for a real one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..core.keys import GROUP, QueueKeys
from ..engine.scripts import LIBRARY, Arg, ScriptCall

PUBLISH = LIBRARY["publish"]
FETCH = LIBRARY["fetch"]
RECLAIM = LIBRARY["reclaim"]
EXTEND = LIBRARY["extend"]
ACK = LIBRARY["ack"]
RETRY = LIBRARY["retry"]
DEAD_LETTER = LIBRARY["dead_letter"]
CANCEL_DELAYED = LIBRARY["cancel_delayed"]
RESCHEDULE_DELAYED = LIBRARY["reschedule_delayed"]
DLQ_REPLAY = LIBRARY["dlq_replay"]
DLQ_PURGE = LIBRARY["dlq_purge"]
QUEUE_DELETE = LIBRARY["queue_delete"]
ERASE_QUEUED = LIBRARY["erase_queued"]

Settle = tuple[int, str, int]  # lane, entry id, delivery token (the lease)


def _optional(value: int | None) -> Arg:
    return "" if value is None else value


class PublishBatch:
    """The KEYS and ARGV of one publish.lua call, built message by message.

    Idempotency keys are extra KEYS after the queue's twelve; a message names its own by
    index (0: none). ``limits``: the depth high/normal and low messages may fill the lanes
    to (None: unbounded).
    """

    __slots__ = ("args", "keys")

    def __init__(self, keys: QueueKeys, dedupe_window_ms: int,
                 limits: tuple[int | None, int | None] = (None, None)) -> None:
        self.keys: list[str] = list(keys.script_keys)
        self.args: list[Arg] = [dedupe_window_ms, _optional(limits[0]), _optional(limits[1])]

    def add(self, msg_id: str, lane: int, envelope: bytes, expires_at_ms: int | None,
            due_at_ms: int | None, delay_ms: int | None, idempotency_key: str | None) -> None:
        """One message (positional arguments: this runs for every message published)."""
        index = 0
        if idempotency_key is not None:
            self.keys.append(idempotency_key)
            index = len(self.keys)
        self.args += (msg_id, lane, envelope, "" if expires_at_ms is None else expires_at_ms,
                      "" if due_at_ms is None else due_at_ms, "" if delay_ms is None else delay_ms,
                      index)

    def call(self) -> ScriptCall:
        return PUBLISH, self.keys, self.args


def refused_depth(reply: list[Any]) -> int | None:
    """The lanes' depth if publish.lua refused the batch for want of room, else None."""
    return int(reply[1]) if reply and reply[0] == -1 else None


async def fetch(client: Any, keys: QueueKeys, *, consumer: str, quotas: Sequence[int],
                capacity: int, promote_limit: int, on_expire: str) -> Any:
    """{delivered, dropped, ms until the next delayed message or -1, last entry ids}."""
    return await FETCH(client, keys.script_keys, [GROUP, consumer, *quotas, capacity,
                                                  promote_limit, on_expire])


async def reclaim(client: Any, keys: QueueKeys, *, consumer: str, min_idle_ms: int, count: int,
                  max_deliveries: int, on_expire: str, dead_after_ms: int, isolate_from: int,
                  suspect: bool) -> Any:
    """{delivered, dropped, removed consumers, suspects skipped}; see reclaim.lua."""
    return await RECLAIM(client, keys.script_keys, [
        GROUP, consumer, min_idle_ms, count, max_deliveries, on_expire, dead_after_ms,
        isolate_from, "suspect" if suspect else "many"])


async def extend(client: Any, keys: QueueKeys, *, consumer: str,
                 leases: Iterable[Settle]) -> Any:
    """Renew ``leases``; {1-based indexes of the leases lost, the config hash, flat}."""
    args: list[Arg] = [GROUP, consumer]
    for lease in leases:
        args += lease
    return await EXTEND(client, keys.script_keys, args)


async def ack(client: Any, keys: QueueKeys, settles: Iterable[tuple[int, str, int, str]]
              ) -> list[int]:
    """Ack (lane, entry id, token, msg id) each; the 1-based indexes refused (lease lost)."""
    args: list[Arg] = [GROUP]
    for settle in settles:
        args += settle
    result: list[int] = await ACK(client, keys.script_keys, args)
    return result


async def retry(client: Any, keys: QueueKeys, stat: str,
                items: Iterable[tuple[int, str, int, str, bytes, int | None, int]]) -> list[int]:
    """Park (lane, entry id, token, msg id, new envelope, expires ms, delay ms) each in the
    delayed set; ``stat`` counts them (retried, snoozed, released). Indexes refused."""
    args: list[Arg] = [GROUP, stat]
    for lane, entry_id, token, msg_id, envelope, expires, delay_ms in items:
        args += (lane, entry_id, token, msg_id, envelope, _optional(expires), delay_ms)
    result: list[int] = await RETRY(client, keys.script_keys, args)
    return result


async def dead_letter(client: Any, keys: QueueKeys,
                      items: Iterable[tuple[int, str, int, str, str]]) -> list[int]:
    """Dead-letter (lane, entry id, token, reason, error JSON) each; indexes refused."""
    args: list[Arg] = [GROUP]
    for item in items:
        args += item
    result: list[int] = await DEAD_LETTER(client, keys.script_keys, args)
    return result


def cancel_delayed(keys: QueueKeys, message_id: str) -> ScriptCall:
    """1 if the message waited in the delayed set and is gone now, else 0."""
    return CANCEL_DELAYED, keys.script_keys, [message_id]


def reschedule_delayed(keys: QueueKeys, message_id: str, *, due_at_ms: int | None,
                       delay_ms: int | None) -> ScriptCall:
    """The new due time in ms, or -1 if the message does not wait in the delayed set."""
    return RESCHEDULE_DELAYED, keys.script_keys, [message_id, _optional(due_at_ms),
                                                  _optional(delay_ms)]


def dlq_replay(keys: QueueKeys, items: Iterable[tuple[str, int, str, bytes]]) -> ScriptCall:
    """Replay (dead-letter entry id, lane, msg id, new envelope) each; how many were."""
    args: list[Arg] = []
    for item in items:
        args += item
    return DLQ_REPLAY, keys.script_keys, args


def dlq_purge(keys: QueueKeys, entry_ids: Sequence[str]) -> ScriptCall:
    """Delete those dead-letter entries; how many were."""
    return DLQ_PURGE, keys.script_keys, list(entry_ids)


def erase_queued(keys: QueueKeys, entries: Iterable[tuple[int, str, str]]) -> ScriptCall:
    """Delete those (lane, entry id, msg id) from the lanes; how many entries were."""
    args: list[Arg] = [GROUP]
    for lane, entry_id, msg_id in entries:
        args += [lane, entry_id, msg_id]
    return ERASE_QUEUED, keys.script_keys, args


def queue_delete(keys: QueueKeys, *, force: bool, visibility_timeout_ms: int) -> ScriptCall:
    """{deleted (1|0), messages held, live consumers}."""
    return QUEUE_DELETE, keys.script_keys, [int(force), visibility_timeout_ms]
