"""What operators do with an ordered queue: blocked keys, dead letters, stats.

Like the plain queues' operator tools, these never stop on one badly stored entry: a dead
letter that cannot be read whole is shown with what could be read, and skipped (and
counted) by a replay.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..core.clock import now_ms
from ..core.message import encode
from ..core.progress import ProgressCallback
from ..core.stored import decoded, integer, text
from . import scripts

if TYPE_CHECKING:
    from .queue import OrderedQueue

log = logging.getLogger("tidings.ordering")


@dataclass(slots=True)
class BlockedKey:
    """A key whose head failed: ``state`` is ``retrying`` (it will run again at
    ``next_at``) or ``blocked`` (held until an operator retries or skips it)."""

    key: str
    partition: int
    state: str
    message_id: str
    attempts: int
    error: str
    next_at: float | None = None
    waiting: int = 0  # messages of the key behind the head


@dataclass(slots=True)
class OrderedStats:
    name: str
    partitions: int
    owners: dict[int, str]  # partition -> worker holding its lease ('' when none)
    ready: int  # keys waiting for a worker
    active: int  # keys with a message running
    waiting: int  # keys waiting out a retry or snooze
    blocked: int
    dead: int
    counters: dict[str, int] = field(default_factory=dict)


async def blocked_keys(q: OrderedQueue) -> list[BlockedKey]:
    await q.ensure_ready()
    pipe = q.app.broker.client.pipeline(transaction=False)
    for part in q.parts:
        pipe.hgetall(part.blocked)
        pipe.zrange(part.waiting, 0, -1, withscores=True)
    res = await pipe.execute()
    out: list[BlockedKey] = []
    for index, (blocked, waiting) in enumerate(zip(res[::2], res[1::2], strict=True)):
        due = {text(k): score / 1000 for k, score in waiting}
        for raw_key, raw in blocked.items():
            key = text(raw_key)
            try:
                info = orjson.loads(raw)
            except orjson.JSONDecodeError:
                info = {"state": "blocked", "error": f"unreadable record: {text(raw)}"}
            out.append(BlockedKey(key, index, str(info.get("state", "blocked")),
                                  str(info.get("id", "")), integer(info.get("attempts")) or 0,
                                  str(info.get("error", "")), due.get(key)))
    pipe = q.app.broker.client.pipeline(transaction=False)
    for item in out:
        pipe.llen(q.parts[item.partition].list_key(item.key))
    for item, length in zip(out, await pipe.execute(), strict=True):
        item.waiting = max(0, int(length) - 1)
    return sorted(out, key=lambda b: (b.partition, b.key))


async def unblock(q: OrderedQueue, key: str, action: str, reason: str = "") -> bool:
    from ..core.errors import ValidationError

    await q.ensure_ready()
    client = q.app.broker.client
    part = q.partition_of(key)
    head = await client.lindex(part.list_key(key), 0)
    if head is None:
        return False
    msg_id, _, raw = bytes(head).partition(b"|")
    msg, error = decoded(raw)
    if msg is None:
        if action == "retry":
            raise ValidationError("key", f"{key!r}'s head cannot be read ({error}); skip it")
        item = bytes(head)
    else:
        msg.attempts = 0
        item = msg_id + b"|" + encode(msg, check=False)
    done = int(await q.app.broker.run(scripts.unblock(
        part, key=key, action=action, head_id=msg_id, item=item, reason=reason)))
    if done < 0:
        raise ValidationError("key", f"{key!r} has a message running right now")
    return done == 1


async def dead_letters(q: OrderedQueue, limit: int) -> list[dict[str, Any]]:
    await q.ensure_ready()
    pipe = q.app.broker.client.pipeline(transaction=False)
    for part in q.parts:
        pipe.xrange(part.dlq, count=limit)
    out: list[dict[str, Any]] = []
    for index, entries in enumerate(await pipe.execute()):
        for entry_id, fields in entries:
            message, error = decoded(fields.get(b"m"))
            out.append({"partition": index, "entry_id": text(entry_id),
                        "key": text(fields.get(b"key", b"")),
                        "message_id": text(fields.get(b"i", b""))
                        or (message.id if message else ""),
                        "message": message, "decode_error": error,
                        "reason": text(fields.get(b"reason", b"")),
                        "error": text(fields.get(b"error", b"")),
                        "dead_at": integer(fields.get(b"dead_at")) or 0})
    return sorted(out, key=lambda d: d["dead_at"])[:limit]


async def dead_letter_action(q: OrderedQueue, action: str, key: str | None,
                             progress: ProgressCallback | None, chunk: int = 500) -> int:
    """Replay or purge dead letters, one script call per chunk of a partition."""
    await q.ensure_ready()
    client = q.app.broker.client
    indexes = range(q.partitions) if key is None else [q.index_of(key)]
    done = 0
    for index in indexes:
        part = q.parts[index]
        start = "-"
        while True:
            entries = await client.xrange(part.dlq, min=start, count=chunk)
            if not entries:
                break
            items = list(_actionable(q, action, key, entries))
            if items:
                done += int(await q.app.broker.run(scripts.replay(part, action, items)))
                if progress is not None:
                    progress(done, None)
            if len(entries) < chunk:
                break
            start = "(" + text(entries[-1][0])
    if action == "replay" and done:
        await client.xadd(q.wake_key, {"w": "1"}, maxlen=1, approximate=False)
    return done


def _actionable(q: OrderedQueue, action: str, key: str | None,
                entries: list[Any]) -> list[tuple[bytes | str, str, bytes | str]]:
    out: list[tuple[bytes | str, str, bytes | str]] = []
    for entry_id, fields in entries:
        entry_key = text(fields.get(b"key", b""))
        if key is not None and entry_key != key:
            continue
        if action == "purge":  # only the entry id matters
            out.append((entry_id, entry_key, ""))
            continue
        msg, error = decoded(fields.get(b"m"))
        if msg is None or not entry_key:
            log.warning("dead letter %s of %s cannot be replayed (%s); purge it", text(entry_id),
                        q.name, error or "no key")
            continue
        msg.attempts = 0
        out.append((entry_id, entry_key, msg.id.encode() + b"|" + encode(msg, check=False)))
    return out


async def stats(q: OrderedQueue) -> OrderedStats:
    await q.ensure_ready()
    pipe = q.app.broker.client.pipeline(transaction=False)
    for part in q.parts:
        pipe.hmget(part.owner, "w", "x")
        pipe.llen(part.ready)
        pipe.hlen(part.active)
        pipe.zcard(part.waiting)
        pipe.hlen(part.blocked)
        pipe.xlen(part.dlq)
        pipe.hgetall(part.stats)
    res = await pipe.execute()
    owners: dict[int, str] = {}
    totals = [0] * 5
    counters: dict[str, int] = defaultdict(int)
    now = now_ms(q.app.clock)
    for index in range(q.partitions):
        row = res[7 * index: 7 * index + 7]
        worker, expiry = row[0]
        live = worker and expiry and int(expiry) > now
        owners[index] = text(worker) if live else ""
        for i in range(5):
            totals[i] += int(row[i + 1])
        for name, value in row[6].items():
            counters[text(name)] += int(value)
    return OrderedStats(q.name, q.partitions, owners, ready=totals[0], active=totals[1],
                        waiting=totals[2], blocked=totals[3], dead=totals[4],
                        counters=dict(counters))
