"""Typed calls of the ordered-queue scripts: KEYS from a :class:`PartitionKeys` (plus the
lists of the keys involved), ARGV built by name. Each mirrors its ``ordered_*.lua`` header;
all return a :data:`ScriptCall`, so the runner can send several in one round trip."""

from __future__ import annotations

from collections.abc import Iterable

from ..core.keys import PartitionKeys
from ..engine.scripts import LIBRARY, Arg, ScriptCall

PUBLISH, TAKE, ACK, FAIL, CLAIM, RELEASE, MEMBERS, UNBLOCK, REPLAY = (
    LIBRARY[f"ordered_{name}"] for name in (
        "publish", "take", "ack", "fail", "claim", "release", "members", "unblock", "replay"))


class _KeyLists:
    """The partition's KEYS plus the list keys its items name by KEYS index."""

    __slots__ = ("keys", "part")

    def __init__(self, part: PartitionKeys) -> None:
        self.part = part
        self.keys: list[str] = list(part.script_keys)

    def index(self, key: str) -> int:
        list_key = self.part.list_key(key)
        if list_key not in self.keys:
            self.keys.append(list_key)
        return self.keys.index(list_key) + 1


def publish(part: PartitionKeys, items: Iterable[tuple[str, bytes]]) -> ScriptCall:
    """Append (key, "id|envelope") items to their keys' lists; how many were added."""
    lists, args = _KeyLists(part), list[Arg]()
    for key, item in items:
        args += (lists.index(key), key, item)
    return PUBLISH, lists.keys, args


def take(part: PartitionKeys, *, worker: str, epoch: str, count: int, max_deliveries: int,
         on_failure: str) -> ScriptCall:
    """{1, [key, item, deliveries]..., ms to the next due key or -1}, or {0}: not ours."""
    return TAKE, part.script_keys, [worker, epoch, count, part.list_prefix, max_deliveries,
                                    on_failure]


def ack(part: PartitionKeys, *, worker: str, epoch: str,
        heads: Iterable[tuple[str, str]]) -> ScriptCall:
    """Settle processed (key, msg id) heads; the 1-based indexes refused."""
    lists, args = _KeyLists(part), list[Arg]([worker, epoch])
    for key, msg_id in heads:
        args += (lists.index(key), key, msg_id)
    return ACK, lists.keys, args


def fail(part: PartitionKeys, *, worker: str, epoch: str, key: str, msg_id: str, action: str,
         item: bytes, delay_ms: int, blocked_info: str, reason: str,
         error: str) -> ScriptCall:
    """Settle a failed head (action: retry, snooze, block, dead_letter); 1, or 0 refused."""
    return FAIL, [*part.script_keys, part.list_key(key)], [
        worker, epoch, key, msg_id, action, item, delay_ms, blocked_info, reason, error]


def claim(part: PartitionKeys, *, worker: str, epoch: str, lease_ms: int) -> ScriptCall:
    """Claim (epoch '') or renew the partition; the epoch, or 0 when another holds it."""
    return CLAIM, part.script_keys, [worker, epoch, lease_ms]


def release(part: PartitionKeys, *, worker: str, epoch: str) -> ScriptCall:
    """Give the partition up; 1, or 0 if the caller did not own it."""
    return RELEASE, part.script_keys, [worker, epoch]


def members(members_key: str, *, worker: str, ttl_ms: int, leave: bool = False
            ) -> ScriptCall:
    """Heartbeat (or leave); the live workers, sorted."""
    return MEMBERS, [members_key], [worker, ttl_ms, "1" if leave else "0"]


def unblock(part: PartitionKeys, *, key: str, action: str, head_id: bytes, item: bytes,
            reason: str) -> ScriptCall:
    """Retry or skip a blocked key's head; 1 done, 0 not blocked, -1 running now."""
    return UNBLOCK, [*part.script_keys, part.list_key(key)], [key, action, head_id, item,
                                                              reason]


def replay(part: PartitionKeys, action: str,
           entries: Iterable[tuple[bytes | str, str, bytes | str]]) -> ScriptCall:
    """Replay (or purge) (dead-letter entry id, key, item) entries; how many were handled."""
    lists, args = _KeyLists(part), list[Arg]([action])
    for entry_id, key, item in entries:
        args += (entry_id, lists.index(key) if action == "replay" else 0, key, item)
    return REPLAY, lists.keys, args
