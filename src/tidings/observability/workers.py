"""The workers of the fleet, read from Redis: who consumes what, and are they alive.

A worker heartbeats into each of its queues' consumer sets (consumer name -> last beat on
the server's clock); what it holds in flight is its share of the consumer group's
pending entries. :func:`read_workers` joins both over every queue the server knows, in
two pipelined round trips, for ``GET /v1/workers`` and the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.keys import GROUP, LANE_NAMES
from ..core.stored import text
from ..queues.host import ExtensionHost
from ..queues.registry import registered_names
from .fleet import DEFAULT_VISIBILITY


@dataclass(slots=True)
class WorkerInfo:
    """One consumer: ``alive`` if it heartbeated within a visibility timeout of each of
    its queues; ``in_flight`` messages it holds, per queue."""

    name: str
    alive: bool
    last_heartbeat: float  # seconds since the epoch, server clock
    queues: list[str] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    heartbeat_age: float = 0.0  # seconds since its newest heartbeat, server clock

    @property
    def in_flight_total(self) -> int:
        return sum(self.in_flight.values())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "alive": self.alive, "last_heartbeat": self.last_heartbeat,
                "queues": self.queues, "in_flight": self.in_flight,
                "in_flight_total": self.in_flight_total}


async def read_workers(app: ExtensionHost, names: list[str] | None = None) -> list[WorkerInfo]:
    """Every consumer of ``names`` (default: every queue the server knows), by name."""
    client = app.broker.client
    if names is None:
        names = await registered_names(app.broker, app.key_space)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for name in names:
        keys = app.key_space.queue(name)
        pipe.zrange(keys.consumers, 0, -1, withscores=True)
        for lane in keys.lanes:
            pipe.xpending(lane, GROUP)
    replies = await pipe.execute(raise_on_error=False)
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    workers: dict[str, WorkerInfo] = {}
    step = 1 + len(LANE_NAMES)
    for i, name in enumerate(names):
        beats, *pending = replies[1 + i * step: 1 + (i + 1) * step]
        declared = app.queues.get(name)
        visibility = declared.config.visibility_timeout if declared else DEFAULT_VISIBILITY
        for consumer, beat in beats if isinstance(beats, list) else ():
            who = text(consumer)
            info = workers.setdefault(who, WorkerInfo(who, True, 0.0))
            info.queues.append(name)
            info.last_heartbeat = max(info.last_heartbeat, beat / 1000)
            info.alive = info.alive and beat >= now_ms - visibility * 1000
            info.in_flight[name] = 0
        for reply in pending:
            for row in (reply.get("consumers") or []) if isinstance(reply, dict) else ():
                who = text(row["name"])
                if who in workers and name in workers[who].in_flight:
                    workers[who].in_flight[name] += int(row["pending"])
    for info in workers.values():
        info.heartbeat_age = max(0.0, now_ms / 1000 - info.last_heartbeat)
    return sorted(workers.values(), key=lambda w: w.name)
