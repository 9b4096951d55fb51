"""Fleet-wide figures read from Redis: what every worker shares, reported once.

:func:`read_fleet` takes one snapshot of every queue the server knows (lane depths,
messages held by consumers, the age of the oldest waiting message per lane, consumer
group lag, delayed and dead letters, live consumers, the server-side counters) and of
the server itself (used memory, clients, network), in two pipelined round trips, ages
measured on the server's clock. :class:`FleetCollector` serves the latest snapshot to
Prometheus; ``tidings exporter`` runs one, and a worker can run one too, elected
(:class:`ReporterLease`) so that the fleet reports each queue once. ``tidings stats
--json`` prints the same snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import ResponseError

from ..core.keys import GROUP, LANE_NAMES
from ..core.stored import text
from ..engine.scripts import LIBRARY
from ..queues.host import ExtensionHost
from ..queues.registry import registered_names

_LEASE = LIBRARY["fleet_reporter"]
DEFAULT_VISIBILITY = 30.0  # seconds: a queue this process does not declare
# Server-side counters of a queue's stats hash, summed by what they count.
_COUNTERS = {"published": "published", "acked": "acked", "retried": "retried",
             "snoozed": "snoozed", "released": "released", "dead_lettered": "dead_lettered",
             "expired_dropped": "expired", "expired_dead_lettered": "expired",
             "poison": "poison", "replayed": "replayed", "purged": "purged"}
BreakerSource = Callable[[], Awaitable[dict[str, str]]]


@dataclass(slots=True)
class LaneFigures:
    waiting: int  # delivered to no consumer yet
    held: int  # delivered, not settled (pending in the group)
    oldest_age: float | None  # seconds the oldest waiting message has waited
    lag: int  # the group's lag (Redis's own figure where it has one)


@dataclass(slots=True)
class QueueFigures:
    name: str
    lanes: dict[str, LaneFigures]
    delayed: int
    dead: int
    consumers: int  # consumers that heartbeated within the visibility timeout
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return sum(lane.waiting for lane in self.lanes.values())

    @property
    def oldest_age(self) -> float | None:
        ages = [lane.oldest_age for lane in self.lanes.values() if lane.oldest_age is not None]
        return max(ages) if ages else None


@dataclass(slots=True)
class FleetSnapshot:
    queues: list[QueueFigures]
    server: dict[str, int]  # used_memory, connected_clients, net_input/output_bytes
    breakers: dict[str, str]  # name -> closed | half_open | open
    taken_at: float  # server time, seconds
    routing: dict[str, int] = field(default_factory=dict)  # tidings.routing's counters

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``tidings stats --json``, ``/stats``)."""
        out = asdict(self)
        for queue, figures in zip(out["queues"], self.queues, strict=True):
            queue["depth"] = figures.depth
            queue["oldest_age"] = figures.oldest_age
        return out


async def read_fleet(app: ExtensionHost, names: list[str] | None = None,
                     breakers: BreakerSource | None = None) -> FleetSnapshot:
    """One snapshot of ``names`` (default: every queue the server knows)."""
    client = app.broker.client
    if names is None:
        names = await registered_names(app.broker, app.key_space)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.info("memory")
    pipe.info("clients")
    pipe.info("stats")
    pipe.hgetall(app.key_space.routes.stats)
    for name in names:
        keys = app.key_space.queue(name)
        for lane in keys.lanes:
            pipe.xlen(lane)
            pipe.xinfo_groups(lane)
            pipe.xrange(lane, count=1)
        pipe.zcard(keys.delayed)
        pipe.xlen(keys.dlq)
        pipe.zrange(keys.consumers, 0, -1, withscores=True)
        pipe.hgetall(keys.stats)
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies[:5]:
        if isinstance(reply, Exception):
            raise reply
    routing = {text(k): int(v) for k, v in replies.pop(4).items()}
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    server = _server_figures(replies[1:4])
    per_queue = 3 * len(LANE_NAMES) + 4
    firsts = [replies[4 + i * per_queue: 4 + (i + 1) * per_queue] for i in range(len(names))]
    waiting_heads = await _waiting_heads(client, app, names, firsts)
    queues = [_queue_figures(app, name, chunk, heads, now_ms)
              for name, chunk, heads in zip(names, firsts, waiting_heads, strict=True)]
    return FleetSnapshot(queues, server, await breakers() if breakers else {}, now_ms / 1000,
                         routing)


def _server_figures(infos: list[Any]) -> dict[str, int]:
    merged: dict[str, Any] = {}
    for info in infos:
        merged.update(info)
    return {"used_memory": int(merged.get("used_memory", 0)),
            "connected_clients": int(merged.get("connected_clients", 0)),
            "net_input_bytes": int(merged.get("total_net_input_bytes", 0)),
            "net_output_bytes": int(merged.get("total_net_output_bytes", 0))}


def _group(reply: Any) -> dict[str, Any] | None:
    """The tidings group of an XINFO GROUPS reply (None: no stream or no group yet)."""
    if isinstance(reply, Exception) or not reply:
        return None
    for group in reply:
        fields = {text(k): v for k, v in group.items()}
        if text(fields.get("name", b"")) == GROUP:
            return fields
    return None


async def _waiting_heads(client: Any, app: ExtensionHost, names: list[str],
                         chunks: list[list[Any]]) -> list[list[Any]]:
    """Per queue and lane, the first entry after the group's last delivered one."""
    pipe = client.pipeline(transaction=False)
    asked = []
    for name, chunk in zip(names, chunks, strict=True):
        for i, lane in enumerate(app.key_space.queue(name).lanes):
            group = _group(chunk[3 * i + 1])
            last = text(group["last-delivered-id"]) if group else "0-0"
            if last != "0-0":
                pipe.xrange(lane, min=f"({last}", count=1)
            asked.append(last != "0-0")
    replies = iter(await pipe.execute(raise_on_error=False) if any(asked) else [])
    heads: list[list[Any]] = []
    for i, chunk in enumerate(chunks):
        row = []
        for j in range(len(LANE_NAMES)):
            # No delivery yet: the stream's first entry is the first waiting one.
            reply = next(replies) if asked[i * len(LANE_NAMES) + j] else chunk[3 * j + 2]
            row.append(None if isinstance(reply, Exception) else reply)
        heads.append(row)
    return heads


def _queue_figures(app: ExtensionHost, name: str, chunk: list[Any], heads: list[Any],
                   now_ms: int) -> QueueFigures:
    lanes = {}
    for i, lane in enumerate(LANE_NAMES):
        length = chunk[3 * i] if isinstance(chunk[3 * i], int) else 0
        group = _group(chunk[3 * i + 1])
        held = int(group["pending"]) if group else 0
        waiting = max(0, length - held)
        lag = group.get("lag") if group else None
        head = heads[i]
        oldest = None
        if waiting and head:
            oldest = max(0.0, (now_ms - int(text(head[0][0]).split("-")[0])) / 1000)
        lanes[lane] = LaneFigures(waiting, held, oldest, waiting if lag is None else int(lag))
    delayed, dead, consumers, stats = chunk[-4:]
    declared = app.queues.get(name)
    visibility = declared.config.visibility_timeout if declared else DEFAULT_VISIBILITY
    alive = (sum(1 for _, beat in consumers if beat >= now_ms - visibility * 1000)
             if isinstance(consumers, list) else 0)
    counters: dict[str, int] = {}
    for key, value in (stats.items() if isinstance(stats, dict) else ()):
        what = _COUNTERS.get(text(key).split(":", 1)[0])
        if what is not None:
            counters[what] = counters.get(what, 0) + int(value)
    return QueueFigures(name, lanes, _int(delayed), _int(dead), alive, counters)


def _int(reply: Any) -> int:
    if isinstance(reply, ResponseError):
        raise reply
    return int(reply or 0)


_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class FleetCollector:
    """A prometheus-client collector of the latest :class:`FleetSnapshot`.

    ``refresh()`` (awaited by the HTTP handler before each scrape, at most every
    ``min_interval`` seconds so many scrapers do not multiply the load) takes a new one;
    a failed read is reported as ``tidings_fleet_up 0`` with the last good figures gone.
    """

    def __init__(self, app: ExtensionHost, breakers: BreakerSource | None = None,
                 min_interval: float = 1.0) -> None:
        self.app = app
        self.breakers = breakers
        self.min_interval = min_interval
        self.snapshot: FleetSnapshot | None = None
        self.error: str | None = None
        self.active = True  # False: another worker reports the fleet (see ReporterLease)
        self.decided = asyncio.Event()  # set once an election round has decided ``active``
        self._taken = float("-inf")

    async def refresh(self) -> None:
        now = self.app.clock.monotonic()
        if not self.active or now - self._taken < self.min_interval:
            return
        self._taken = now
        try:
            self.snapshot = await read_fleet(self.app, breakers=self.breakers)
            self.error = None
        except Exception as exc:  # reported as a metric: a scrape never fails on Redis
            self.snapshot, self.error = None, f"{type(exc).__name__}: {exc}"

    def collect(self) -> Iterator[Metric]:
        if not self.active:
            return
        yield GaugeMetricFamily("tidings_fleet_up", "1 if the last read of the fleet's "
                                "figures from Redis succeeded.", value=int(self.error is None))
        if self.snapshot is not None:
            yield from _families(self.snapshot)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _families(snap: FleetSnapshot) -> Iterator[Metric]:
    def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    lane_metrics = {
        "waiting": gauge("tidings_queue_depth_messages", "Messages waiting for delivery.",
                         ["queue", "lane"]),
        "held": gauge("tidings_queue_held_messages", "Messages delivered to a consumer and "
                      "not settled yet.", ["queue", "lane"]),
        "oldest_age": gauge("tidings_queue_oldest_message_age_seconds", "Age of the oldest "
                            "waiting message (0 when none waits).", ["queue", "lane"]),
        "lag": gauge("tidings_queue_group_lag_messages", "Consumer group lag.",
                     ["queue", "lane"]),
    }
    delayed = gauge("tidings_queue_delayed_messages", "Messages in the delayed set.", ["queue"])
    dead = gauge("tidings_queue_dead_letters", "Messages in the dead-letter queue.", ["queue"])
    consumers = gauge("tidings_queue_consumers", "Consumers that heartbeated within the "
                      "visibility timeout.", ["queue"])
    counters = CounterMetricFamily("tidings_queue_messages", "Server-side counters of the "
                                   "queue, all workers together.", labels=["queue", "outcome"])
    for q in snap.queues:
        for lane, figures in q.lanes.items():
            for attr, metric in lane_metrics.items():
                metric.add_metric([q.name, lane], getattr(figures, attr) or 0)
        delayed.add_metric([q.name], q.delayed)
        dead.add_metric([q.name], q.dead)
        consumers.add_metric([q.name], q.consumers)
        for outcome, value in q.counters.items():
            counters.add_metric([q.name, outcome], value)
    yield from (*lane_metrics.values(), delayed, dead, consumers, counters)
    breakers = gauge("tidings_breaker_state", "Circuit breaker state: 0 closed, 1 half open, "
                     "2 open.", ["breaker"])
    for name, state in snap.breakers.items():
        breakers.add_metric([name], _BREAKER_STATES.get(state, 0))
    yield breakers
    routing = CounterMetricFamily("tidings_routing_messages", "Topic routing counters, all "
                                  "producers together (binding empty: every binding).",
                                  labels=["outcome", "binding"])
    for name, value in sorted(snap.routing.items()):
        outcome, _, binding = name.partition(":")
        routing.add_metric([outcome, binding], value)
    yield routing
    server = snap.server
    yield GaugeMetricFamily("tidings_redis_used_memory_bytes", "Redis used_memory.",
                            value=server["used_memory"])
    yield GaugeMetricFamily("tidings_redis_connected_clients", "Redis connected_clients.",
                            value=server["connected_clients"])
    yield CounterMetricFamily("tidings_redis_network_received_bytes", "Redis "
                              "total_net_input_bytes.", value=server["net_input_bytes"])
    yield CounterMetricFamily("tidings_redis_network_sent_bytes", "Redis "
                              "total_net_output_bytes.", value=server["net_output_bytes"])


class ReporterLease:
    """Elects the one worker of the fleet that reports fleet-wide metrics.

    A lease in Redis (``KeySpace.fleet_reporter``), taken or renewed atomically every
    ``ttl / 3`` seconds by each candidate: the holder reports, the others do not, and when
    the holder dies another takes over within ``ttl``.
    """

    def __init__(self, app: ExtensionHost, owner: str, ttl: float = 15.0) -> None:
        self.app = app
        self.owner = owner
        self.ttl = ttl

    async def claim(self) -> bool:
        """Take or renew the lease; True while this owner holds it."""
        key = self.app.key_space.fleet_reporter
        return bool(await _LEASE(self.app.broker.client, [key],
                                 [self.owner, int(self.ttl * 1000), 0]))

    async def release(self) -> None:
        key = self.app.key_space.fleet_reporter
        await _LEASE(self.app.broker.client, [key], [self.owner, int(self.ttl * 1000), 1])


@dataclass(slots=True)
class WorkerFigures:
    """One consumer (a worker process's name) as the queues' heartbeats see it."""

    consumer: str
    queues: list[str]
    in_flight: int  # messages it holds, every queue and lane together
    heartbeat_age: float  # seconds since its newest heartbeat on any queue
    alive: bool  # heartbeated within the queue's visibility timeout


async def read_workers(app: ExtensionHost, names: list[str] | None = None
                       ) -> list[WorkerFigures]:
    """Every consumer that heartbeats on ``names`` (default: every queue), newest first,
    with what it holds; one pipelined round trip, ages on the server's clock."""
    if names is None:
        names = await registered_names(app.broker, app.key_space)
    pipe = app.broker.client.pipeline(transaction=False)
    pipe.time()
    for name in names:
        keys = app.key_space.queue(name)
        pipe.zrange(keys.consumers, 0, -1, withscores=True)
        for lane in keys.lanes:
            pipe.xpending(lane, GROUP)
    replies = await pipe.execute(raise_on_error=False)
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    found: dict[str, WorkerFigures] = {}
    step = 1 + len(LANE_NAMES)
    for i, name in enumerate(names):
        beats, *pending = replies[1 + i * step: 1 + (i + 1) * step]
        declared = app.queues.get(name)
        visibility = declared.config.visibility_timeout if declared else DEFAULT_VISIBILITY
        for member, beat in beats if isinstance(beats, list) else ():
            consumer, age = text(member), max(0.0, (now_ms - beat) / 1000)
            row = found.setdefault(consumer, WorkerFigures(consumer, [], 0, age, False))
            row.queues.append(name)
            row.heartbeat_age = min(row.heartbeat_age, age)
            row.alive = row.alive or age <= visibility
        for reply in pending:
            for held in (reply.get("consumers") or []) if isinstance(reply, dict) else []:
                holder = found.get(text(held["name"]))
                if holder is not None:
                    holder.in_flight += int(held["pending"])
    return sorted(found.values(), key=lambda w: (w.heartbeat_age, w.consumer))
