"""A snapshot of one queue (``queue.stats()``, ``tidings queues``), read in one round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from ..core.clock import now_ms
from ..core.keys import GROUP, LANE_NAMES
from ..core.stored import text
from ..engine.connection import raise_if_denied

if TYPE_CHECKING:
    from .queue import Queue


@dataclass(slots=True)
class QueueStats:
    """A snapshot of one queue, as ``tidings queues`` shows it."""

    name: str
    lanes: dict[str, int]  # undelivered entries per lane
    in_flight: int
    delayed: int
    dead: int
    oldest_age: float | None  # seconds since the oldest undelivered message was enqueued
    consumers: int
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return sum(self.lanes.values())


async def read_stats(queue: Queue) -> QueueStats:
    """Lane depths, leases held, delayed, dead, oldest age, consumers and counters.

    Reads only: a queue whose consumer group is missing reports its lanes as undelivered.
    """
    broker = queue.app.broker
    k = queue.keys
    pipe = broker.client.pipeline(transaction=False)
    for lane_key in k.lanes:
        pipe.xlen(lane_key)
        pipe.xpending(lane_key, GROUP)
        pipe.xrange(lane_key, count=1)
    pipe.zcard(k.delayed)
    pipe.xlen(k.dlq)
    pipe.zcard(k.consumers)
    pipe.hgetall(k.stats)
    res = await pipe.execute(raise_on_error=False)
    for reply in res:
        if isinstance(reply, ResponseError):
            raise_if_denied(reply, broker.user, f"reading the stats of {queue.name}")
            if "NOGROUP" not in str(reply):
                raise reply
    lanes: dict[str, int] = {}
    in_flight = 0
    oldest: int | None = None
    for i, name in enumerate(LANE_NAMES):
        length, pending, first = res[3 * i: 3 * i + 3]
        held = int(pending["pending"]) if isinstance(pending, dict) and pending else 0
        lanes[name] = length - held
        in_flight += held
        if first:
            ts = int(text(first[0][0]).split("-")[0])
            oldest = ts if oldest is None else min(oldest, ts)
    counters = {text(key): int(v) for key, v in res[-1].items()}
    age = None if oldest is None else max(0.0, (now_ms(queue.app.clock) - oldest) / 1000)
    return QueueStats(queue.name, lanes, in_flight, res[9], res[10], age, res[11], counters)
