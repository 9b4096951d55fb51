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
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.errors import CampaignNotFoundError
from ..core.events import Event, EventKind
from ..core.message import from_ms
from ..core.middleware import Middleware, WorkerView
from ..core.stored import text
from ..engine.scripts import LIBRARY

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost

__all__ = ["CampaignCounter", "CampaignProgress", "read_progress"]

log = logging.getLogger("tidings.scheduling.campaigns")

# How many pending-set entries one sweep or cancel script call walks: bounds how long a
# single call holds the server. Read at call time, so tests can shrink it.
SWEEP_BATCH = 10_000
SWEEP = LIBRARY["campaign_sweep"]

_SETTLED = {EventKind.ACKED: "processed", EventKind.DEAD_LETTERED: "failed",
            EventKind.EXPIRED: "failed"}


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    """A campaign's record and counters.

    ``pending`` messages wait in the delayed set; ``released`` left it for a lane (sent
    right away when already due at publish); ``processed`` + ``failed`` were settled;
    ``duplicates`` recipients were already published (a re-run, or an id given twice);
    ``skipped`` recipients had no valid time (past with ``if_past='skip'``, or a time the
    ``skip`` DST policy dropped). ``paused_at`` is set while paused (``paused``); the
    pending messages are then held out of the delayed set. At any moment
    ``scheduled == pending + released + cancelled``. ``cursor`` counts the recipients
    consumed so far.
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
    paused_at: datetime | None = None

    @property
    def paused(self) -> bool:
        """Paused: its ``pending`` messages are held, none released until resumed."""
        return self.paused_at is not None

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
        data["paused"] = self.paused
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
                   when("finished_at"), when("cancelled_at"), when("paused_at"))


async def sweep(app: ExtensionHost, queue: str, campaign_id: str,
                limit: int) -> tuple[int, list[Any], int]:
    """One sweep batch; returns (more to sweep, flat campaign hash, pending left)."""
    queue_keys = app.key_space.queue(queue)
    campaign = queue_keys.campaign(campaign_id)
    keys = [*queue_keys.script_keys, campaign.record, campaign.pending, campaign.held]
    _, more, pending, flat = await app.broker.call(SWEEP, keys, [limit])
    return int(more), flat, int(pending)


async def read_progress(app: ExtensionHost, queue: str, campaign_id: str) -> CampaignProgress:
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

    def __init__(self, app: ExtensionHost, flush_delay: float = 0.1) -> None:
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
        await self.app.clock.sleep(self.flush_delay)
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
        space = self.app.key_space
        by_queue: dict[str, list[tuple[str, str, int]]] = {}
        for (queue, campaign_id, field), n in counts.items():
            by_queue.setdefault(queue, []).append((campaign_id, field, n))
        client = self.app.broker.client
        done: set[str] = set()
        try:
            for queue, items in by_queue.items():
                pipe = client.pipeline(transaction=True)  # all or nothing per queue
                for campaign_id, field, n in items:
                    pipe.hincrby(space.queue(queue).campaign(campaign_id).record, field, n)
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
        now = self.app.clock.monotonic()
        for queue, campaign_id, _ in counts:
            if now - self._swept.get((queue, campaign_id), 0.0) >= 1.0:
                self._swept[(queue, campaign_id)] = now
                await sweep(self.app, queue, campaign_id, SWEEP_BATCH)

    async def on_worker_stop(self, worker: WorkerView) -> None:
        """Flush what is left when the worker has drained."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        try:
            await self.flush()
        except Exception as exc:
            log.warning("campaign counters lost at shutdown: %s", exc)
