"""What the pages show, read from the library (no HTTP here): queues, workers, traces.

Each function returns plain data for one template; the figures come from the same reads
as the CLI (``read_fleet``, ``queue.stats``, ``queue.dlq``, ``pause_state``, ...).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.keys import LANE_NAMES
from ..core.stored import text, time_of_ms
from ..flow.pause import PAUSED_FIELD
from ..observability.fleet import read_fleet
from .history import History, sparkline

if TYPE_CHECKING:
    from ..app import Tidings
    from ..queues.queue import Queue

REASONS_SCANNED = 1000  # dead letters read to count the DLQ's reasons on a queue page


def age_text(seconds: float | None) -> str:
    """``12s``, ``4m 2s``, ``3h 5m``, ``2d 1h``, or ``-``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {(s % size) // sub_size}{sub}"
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds:.1f}s"


async def paused_queues(app: Tidings, names: list[str]) -> set[str]:
    pipe = app.broker.client.pipeline(transaction=False)
    for name in names:
        pipe.hexists(app.key_space.queue(name).config, PAUSED_FIELD)
    return {name for name, paused in zip(names, await pipe.execute(), strict=True) if paused}


async def overview(app: Tidings, history: History) -> list[dict[str, Any]]:
    """One row per queue: depth per lane, oldest age, in flight, sparkline, paused."""
    names = await app.queue_names()
    snapshot = await read_fleet(app, names)
    paused = await paused_queues(app, names)
    rows = []
    for q in snapshot.queues:
        history.add(q.name, snapshot.taken_at, q.counters)
        acked, failed = history.rates(q.name)
        rows.append({
            "name": q.name, "lanes": {lane: q.lanes[lane].waiting for lane in LANE_NAMES},
            "depth": q.depth, "in_flight": sum(f.held for f in q.lanes.values()),
            "delayed": q.delayed, "dead": q.dead, "consumers": q.consumers,
            "oldest": age_text(q.oldest_age), "paused": q.name in paused,
            "spark": sparkline(acked, failed),
            "rate": f"{acked[-1]:.1f}" if acked else "-",
            "errors": f"{failed[-1]:.1f}" if failed else "-",
        })
    return rows


async def weights_of(queue: Queue) -> tuple[int, int, int]:
    """The weights workers use: the override ``tidings weights`` stored, else the config's."""
    stored = await queue.app.broker.client.hget(queue.keys.config, "weights")
    if stored is not None:
        try:
            high, normal, low = (int(x) for x in text(stored).split(","))
            return high, normal, low
        except ValueError:
            pass  # a malformed override: workers ignore it too
    return queue.config.weights


async def queue_detail(app: Tidings, queue: Queue) -> dict[str, Any]:
    """A queue page: lanes, in flight, delayed (the next due), DLQ by reason, pause, weights."""
    stats = await queue.stats()
    state = await app.flow.pause_state(queue)
    reasons: Counter[str] = Counter()
    async for entry in queue.dlq.scan(page=200):
        reasons[entry.reason or "(none)"] += 1
        if sum(reasons.values()) >= REASONS_SCANNED:
            break
    due = await queue.app.broker.client.zrange(queue.keys.delayed, 0, 9, withscores=True)
    return {
        "stats": stats, "oldest": age_text(stats.oldest_age), "paused": state.paused,
        "paused_keys": state.keys, "weights": await weights_of(queue),
        "reasons": reasons.most_common(), "reasons_partial": sum(reasons.values()) < stats.dead,
        "next_delayed": [(text(member), time_of_ms(int(score))) for member, score in due],
    }


@dataclass(slots=True)
class TraceResult:
    """What a search found: where each message is now (Redis) and its ledger timeline."""

    query: str
    by: str  # id | correlation
    located: list[tuple[str, Any]] = field(default_factory=list)  # (queue, MessageInfo)
    traces: list[Any] = field(default_factory=list)  # tidings.ledger.trace.MessageTrace
    ledger: bool = False
    ledger_error: str | None = None


async def trace_search(app: Tidings, query: str, by: str) -> TraceResult:
    """Find a message by id in every queue and, with the ledger on, its timeline; by
    correlation id only the ledger can look (Redis keeps no index of it)."""
    result = TraceResult(query, by, ledger=app.ledger.configured)
    if by == "id":
        for name in await app.queue_names():
            queue = await app.find_queue(name)
            info = None if queue is None else await queue.inspect(query)
            if info is not None:
                result.located.append((name, info))
    if result.ledger:
        try:
            if by == "id":
                result.traces = await app.ledger.trace(query)
            else:
                result.traces = await app.ledger.trace(correlation_id=query)
        except Exception as exc:  # the ledger down must not take the page with it
            result.ledger_error = f"{type(exc).__name__}: {exc}"
    return result
