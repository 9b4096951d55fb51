"""Firing schedules: each tick claims the due schedules in one atomic script (with a
lease, so two tickers never fire the same occurrence), publishes their occurrences with
idempotency keys, and commits. Every worker of the app runs a ticker (no process to mind).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..core.clock import now_ms
from ..core.errors import (
    BrokerUnavailableError,
    QueueFullError,
    UnknownQueueError,
    ValidationError,
)
from ..core.ids import new_message_id
from ..core.middleware import Middleware, WorkerView
from ..core.stored import text
from ..engine.connection import TRANSIENT
from ..engine.scripts import LIBRARY
from .recurrence import MissedPolicy, ScheduleError, due_occurrences, epoch_ms, occurrence_key
from .schedule import Schedule, render, topic_of

if TYPE_CHECKING:
    from .schedules import Schedules

log = logging.getLogger("tidings.scheduling")
_CLAIM, _COMMIT = LIBRARY["schedule_claim"], LIBRARY["schedule_commit"]


@dataclass(frozen=True, slots=True)
class Fired:
    """One occurrence a tick published (``message_id`` is the first one's for a duplicate)."""

    schedule_id: str
    occurrence: datetime
    message_id: str


_CLAIM, _COMMIT, _SAVE = (LIBRARY[n] for n in ("schedule_claim", "schedule_commit",
                                               "schedule_save"))


class TickerMiddleware(Middleware):
    """Runs the schedule ticker inside every worker of the app."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker

    async def worker_loop(self, worker: WorkerView) -> None:
        await self.ticker.run()


class Ticker:
    """Fires the due schedules of one :class:`Schedules`."""

    def __init__(self, schedules: Schedules) -> None:
        self.schedules = schedules

    async def tick(self, now: datetime | None = None, *,
                   lookahead: float = 0.0) -> list[Fired]:
        """What :meth:`Schedules.tick` does."""
        now = self.schedules._now() if now is None else now
        if now.tzinfo is None:
            raise ScheduleError("now", "must be timezone-aware")
        horizon = now + timedelta(seconds=lookahead)
        fired: list[Fired] = []
        while True:
            claimed = await self._claim(now, horizon)
            behind = False
            for schedule, token in claimed:
                batch, more = await self._fire(schedule, token, horizon)
                fired += batch
                behind = behind or more
            # A full claim may have left due schedules unclaimed; a schedule catching up
            # with missed=all is due again at once.
            if len(claimed) < self.schedules.batch and not behind:
                return fired

    async def _claim(self, now: datetime, horizon: datetime) -> list[tuple[Schedule, str]]:
        client = await self.schedules._client()
        bound = epoch_ms(horizon)
        ids = [text(i) for i in await client.zrangebyscore(
            self.schedules._due_key, "-inf", bound, start=0, num=self.schedules.batch)]
        if not ids:
            return []
        token = new_message_id(now_ms(self.schedules.app.clock))
        lease_end = epoch_ms(now) + int(self.schedules.lease * 1000)
        rows = await self.schedules.app.broker.retrying(
            _CLAIM, client, [self.schedules._due_key, *(self.schedules._hash(i) for i in ids)],
            [bound, lease_end, token, *ids])
        out: list[tuple[Schedule, str]] = []
        for _, flat in rows:
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
            out.append((Schedule._from_hash(raw), token))
        return out

    async def _fire(
        self, schedule: Schedule, token: str, horizon: datetime
    ) -> tuple[list[Fired], bool]:
        """Publish a claimed schedule's due occurrences and commit; True if still behind."""
        rec = schedule.recurrence
        occurrences = due_occurrences(
            rec, schedule.checked_until, horizon, schedule.missed, schedule.fired_count,
            grace=schedule.grace, max_batch=self.schedules.max_catch_up)
        # Catching up with missed=all in bounded batches: continue from the last one fired,
        # which keeps the schedule due, so the next tick picks up the rest.
        catch_up = self.schedules.max_catch_up
        behind = schedule.missed is MissedPolicy.ALL and len(occurrences) >= catch_up
        checked = occurrences[-1] if behind else horizon
        fired: list[Fired] = []
        error = ""
        publish = self._publisher(schedule)
        if publish is None:
            return [], False
        for when in occurrences:
            headers = {**schedule.headers, "schedule_id": schedule.id,
                       "occurrence": when.astimezone(UTC).isoformat()}
            try:
                msg_id = await publish(
                    render(schedule.payload, schedule, when), priority=schedule.priority,
                    idempotency_key=occurrence_key(schedule.id, when), headers=headers,
                    send_at=when)
            except ValidationError as exc:
                # The occurrence can never be published (payload over the queue's limit,
                # say): skip it rather than retry it forever, and show why.
                log.error("schedule %s: occurrence %s not published: %s", schedule.id,
                          when.isoformat(), exc)
                error = str(exc)
                continue
            fired.append(Fired(schedule.id, when, msg_id))
        nxt = rec.next_after(checked, schedule.fired_count + len(occurrences))
        client = await self.schedules._client()
        committed = await self.schedules.app.broker.retrying(
            _COMMIT, client, [self.schedules._due_key, self.schedules._hash(schedule.id)],
            [schedule.id, token, schedule.version, epoch_ms(checked),
             epoch_ms(occurrences[-1]) if occurrences else "", len(occurrences),
             "" if nxt is None else epoch_ms(nxt), error])
        if not committed:
            log.info("schedule %s: claim lost before commit (deleted, or re-claimed after the "
                     "lease); its occurrences were deduplicated by their keys", schedule.id)
        return fired, behind and bool(committed)

    def _publisher(self, schedule: Schedule) -> Callable[..., Awaitable[str]] | None:
        """What publishes the schedule's occurrences: its queue's publish, or a topic
        publish (returning the published message's id); None if this app cannot."""
        topic = topic_of(schedule.queue)
        if topic is not None:
            from ..routing import Topics

            topics = self.schedules.app.extension(Topics)

            async def to_topic(payload: Any, **options: Any) -> str:
                return (await topics.publish(topic, payload, **options)).message_id
            return to_topic
        try:
            return self.schedules.app.get_queue(schedule.queue).publish
        except UnknownQueueError:
            # Stored by an app that declares the queue, ticked by one that does not: leave
            # the claim to lapse, so a ticker whose app declares it fires the occurrences.
            log.error("schedule %s targets queue %r, which this app does not declare; left "
                      "for a worker whose app does (retried after the %.0fs claim)",
                      schedule.id, schedule.queue, self.schedules.lease)
            return None

    async def run(self) -> None:
        """Tick every ``interval`` seconds, for ever (a worker runs it and cancels it)."""
        failures = 0
        while True:
            try:
                await self.tick(lookahead=self.schedules.lookahead)
                failures = 0
                pause = self.schedules.interval
            except (*TRANSIENT, BrokerUnavailableError, QueueFullError) as exc:
                # Nothing committed: the claim lapses and a later tick fires the occurrences
                # (their idempotency keys keep the ones already published from doubling).
                failures += 1
                pause = min(30.0, self.schedules.interval * 2 ** min(failures, 5))
                log.warning("schedule tick failed (%s); retrying in %.1fs", exc, pause)
            except Exception:
                # A bug or a corrupt schedule must not end the ticker of a running worker.
                log.exception("schedule tick failed")
                pause = self.schedules.interval
            # Jitter keeps the tickers of many workers from hitting the server in lockstep.
            await self.schedules.app.clock.sleep(pause * (0.9 + 0.2 * random.random()))
