"""Campaign progress: the counters of a campaign's record and what keeps them current.

The scheduling scripts count ``scheduled``, ``duplicates``, ``skipped`` and ``cancelled``
themselves. The other two happen away from any campaign call: a message is *released* when
a worker's fetch promotes it out of the delayed set, and *settled* when a worker acks or
dead-letters it. So ``released`` is counted by sweeping the campaign's pending set for
messages no longer delayed (:func:`sweep`, run by :func:`read_progress`, by cancelling and
by the workers now and then), and ``processed``/``failed`` by the :class:`CampaignCounter`
middleware in the workers.
"""

from __future__ import annotations

import asyncio
import logging
import time as _time
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.errors import CampaignNotFoundError
from ..core.events import Event, EventKind, Middleware
from ..core.message import from_ms
from ..engine.broker import text
from ..engine.scripts import Script
from ..queues.queue import queue_keys

if TYPE_CHECKING:
    from ..app import Tidings
    from ..worker import Worker

__all__ = ["CampaignCounter", "CampaignProgress", "read_progress"]

log = logging.getLogger("tidings.scheduling.campaigns")

# How many pending-set entries one sweep or cancel script call walks: bounds how long a
# single call holds the server. Read at call time, so tests can shrink it.
SWEEP_BATCH = 10_000
SWEEP = Script("campaign_sweep")

_SETTLED = {EventKind.ACKED: "processed", EventKind.DEAD_LETTERED: "failed",
            EventKind.EXPIRED: "failed"}
_COUNTERS: weakref.WeakKeyDictionary[Tidings, CampaignCounter] = weakref.WeakKeyDictionary()


def campaign_keys(prefix: str, queue: str, campaign_id: str) -> tuple[str, str, str]:
    """The record keys of a campaign: its hash, pending set and throttle slots (one slot:
    the queue's hash tag)."""
    base = f"{prefix}:{{{queue}}}:campaign:{campaign_id}"
    return base, f"{base}:pending", f"{base}:slots"


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    """A campaign's record and counters.

    ``pending`` messages wait in the delayed set; ``released`` left it for a lane (sent
    right away when already due at publish); ``processed`` + ``failed`` were settled;
    ``duplicates`` recipients were already published (a re-run, or an id given twice);
    ``skipped`` recipients had no valid time (past with ``if_past='skip'``, or a time the
    ``skip`` DST policy dropped). At any moment ``scheduled == pending + released +
    cancelled``. ``cursor`` counts the recipients consumed so far.
    """

    id: str
    queue: str
    status: str  # scheduling | scheduled | cancelled
    created_at: datetime | None
    scheduled: int
    pending: int
    released: int
    processed: int
    failed: int
    cancelled: int
    duplicates: int
    skipped: int
    cursor: int
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def settled(self) -> int:
        return self.processed + self.failed

    @property
    def done(self) -> bool:
        """Nothing more will happen: fully scheduled (or cancelled) and all released settled."""
        return (self.status != "scheduling" and self.pending == 0
                and self.settled >= self.released)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = value.isoformat() if isinstance(value, datetime) else value
        data["settled"] = self.settled
        data["done"] = self.done
        return data

    @classmethod
    def _from_hash(cls, raw: Mapping[Any, Any], pending: int) -> CampaignProgress:
        h = {text(k): text(v) for k, v in raw.items()}

        def count(name: str) -> int:
            return int(h.get(name) or 0)

        def when(name: str) -> datetime | None:
            value = h.get(name)
            return from_ms(int(value)) if value else None

        return cls(h["id"], h["queue"], h["status"], when("created_at"), count("scheduled"),
                   pending, count("released"), count("processed"), count("failed"),
                   count("cancelled"), count("duplicates"), count("skipped"), count("cursor"),
                   when("finished_at"), when("cancelled_at"))


async def sweep(app: Tidings, queue: str, campaign_id: str,
                limit: int) -> tuple[int, list[Any], int]:
    """One sweep batch; returns (more to sweep, flat campaign hash, pending left)."""
    prefix = app.settings.key_prefix
    keys = [*queue_keys(prefix, queue), *campaign_keys(prefix, queue, campaign_id)[:2]]
    _, more, pending, flat = await app.broker.call(SWEEP, keys, [limit])
    return int(more), flat, int(pending)


async def read_progress(app: Tidings, queue: str, campaign_id: str) -> CampaignProgress:
    """The campaign's counters, after counting the messages released since the last look."""
    while True:
        more, flat, pending = await sweep(app, queue, campaign_id, SWEEP_BATCH)
        if not more:
            break
    if not flat:
        raise CampaignNotFoundError(campaign_id)
    return CampaignProgress._from_hash(dict(zip(flat[::2], flat[1::2], strict=True)), pending)


class CampaignCounter(Middleware):
    """Counts processed / failed campaign messages from lifecycle events (one per app).

    Events of messages with a ``campaign_id`` header are tallied in memory and added to the
    campaign record with HINCRBY shortly after (one transaction per queue and flush), and
    on worker shutdown. Counts tallied by a process that dies before its flush are lost, so
    the counters can fall short after a crash; they never count a message twice, except
    when a flush's reply is lost to a connection failure after the server applied it.
    """

    def __init__(self, app: Tidings, flush_delay: float = 0.1) -> None:
        self.app = app
        self.flush_delay = flush_delay
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._swept: dict[tuple[str, str], float] = {}

    def on_event(self, event: Event) -> None:
        field = _SETTLED.get(event.kind)
        if field is None or event.message is None:
            return
        campaign_id = event.message.headers.get("campaign_id")
        if not campaign_id:
            return
        self.counts[(event.queue, campaign_id, field)] += 1
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a sync caller): the next flush() takes it
                return
            self._task = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_delay)
        try:
            await self.flush()
        except Exception as exc:
            log.warning("campaign counters not flushed (%s); retrying with the next event",
                        exc)

    async def flush(self) -> None:
        """Add the tallied counts to the campaign records now."""
        counts, self.counts = self.counts, Counter()
        if not counts or not self.app.broker.connected:
            self.counts.update(counts)
            return
        prefix = self.app.settings.key_prefix
        by_queue: dict[str, list[tuple[str, str, int]]] = {}
        for (queue, campaign_id, field), n in counts.items():
            by_queue.setdefault(queue, []).append((campaign_id, field, n))
        client = self.app.broker.client
        done: set[str] = set()
        try:
            for queue, items in by_queue.items():
                pipe = client.pipeline(transaction=True)  # all or nothing per queue
                for campaign_id, field, n in items:
                    pipe.hincrby(campaign_keys(prefix, queue, campaign_id)[0], field, n)
                await pipe.execute()
                done.add(queue)
        except BaseException:
            for (queue, campaign_id, field), n in counts.items():
                if queue not in done:
                    self.counts[(queue, campaign_id, field)] += n
            raise
        await self._sweep_now_and_then(counts)

    async def _sweep_now_and_then(self, counts: Counter[tuple[str, str, str]]) -> None:
        """Keep ``released`` current and the pending sets small while a campaign runs."""
        now = _time.monotonic()
        for queue, campaign_id, _ in counts:
            if now - self._swept.get((queue, campaign_id), 0.0) >= 1.0:
                self._swept[(queue, campaign_id)] = now
                await sweep(self.app, queue, campaign_id, SWEEP_BATCH)

    async def flush_on_stop(self, worker: Worker) -> None:
        """Worker service: idle until the worker stops, then flush what is left."""
        try:
            await asyncio.Event().wait()
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
            try:
                await self.flush()
            except Exception as exc:
                log.warning("campaign counters lost at shutdown: %s", exc)


def counter_of(app: Tidings) -> CampaignCounter:
    """The app's counter, installed (middleware and worker service) on first use."""
    found = _COUNTERS.get(app)
    if found is None:
        found = _COUNTERS[app] = CampaignCounter(app)
        app.add_middleware(found)
        app.add_worker_service(found.flush_on_stop)
    return found
