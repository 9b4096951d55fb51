"""Recurring schedules stored in Redis, a ticker every worker runs, and local-time sends.

Recurring schedules (``app.schedules``)::

    digest = await app.schedules.add(
        "daily-digest", queue="email", cron="0 9 * * *", timezone="Europe/Paris",
        payload={"template": "digest", "day": "{occurrence_local}"})
    await app.schedules.pause("daily-digest")
    await app.schedules.update("daily-digest", cron="30 8 * * 1-5")  # from the next occurrence
    await app.schedules.resume("daily-digest")

Every worker of an app whose ``app.schedules`` was touched runs the ticker (there is no
special scheduler process): each tick claims the due schedules in one atomic script, so two
tickers never fire the same occurrence, and publishes each occurrence with the idempotency
key :func:`~tidings.scheduling.recurrence.occurrence_key`, so even a ticker that lost its
claim half-way (it stalled past the lease) cannot make a second message for the same
occurrence (the ticker is in ticker.py). The :class:`~tidings.scheduling.schedule.Schedule`
record itself (validation, payload templates, stored form) is in
:mod:`tidings.scheduling.schedule`.

Redis layout under prefix ``tidings`` (one hash tag, one cluster slot)::

    tidings:{schedules}:due        zset schedule id -> next fire ms (or claim lease end)
    tidings:{schedules}:ids        set of every schedule id
    tidings:{schedules}:s:<id>     hash: def (JSON), version, paused, next_fire, last_fired,
                                   checked_until, fired_count, claim, created_at, ...

Occurrences are published ``lookahead`` (default: one tick interval) before they are due, as
delayed messages with ``send_at`` = the occurrence, so the server's delayed set releases them
on the millisecond instead of at the next tick.

One-off sends at a wall-clock time in the recipient's zone::

    await publish_local(email, {"to": "a@b.c"}, at=datetime(2026, 12, 1, 9, 0),
                        zone="Asia/Tokyo")
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from dataclasses import replace as _replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..core.clock import now_ms, utc_now
from ..core.errors import (
    ScheduleExistsError,
    ScheduleNotFoundError,
    TidingsError,
)
from ..core.ids import new_message_id
from ..core.message import Priority
from ..core.stored import text
from ..engine.scripts import LIBRARY
from .local import publish_local
from .recurrence import (
    AmbiguousPolicy,
    MissedPolicy,
    NonexistentPolicy,
    ScheduleError,
    epoch_ms,
)
from .schedule import (
    DEFINITION_FIELDS,
    TOPIC_TARGET,
    Schedule,
    build_schedule,
    state_of,
    topic_of,
)
from .ticker import Fired, Ticker, TickerMiddleware

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost
    from ..queues.queue import Queue

__all__ = [
    "Fired",
    "Schedule",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "Schedules",
    "publish_local",
]

log = logging.getLogger("tidings.scheduling.schedules")

_SAVE_RETRIES = 20


_SAVE = LIBRARY["schedule_save"]


class Schedules:
    """Recurring schedules of one app; use ``app.schedules``.

    Creating it adds the ticker to the app's middleware, so every worker of the app fires
    due schedules. ``clock`` (a callable returning an aware UTC datetime; default: the
    app's clock) is injectable for tests; ``interval`` is the tick period in seconds;
    ``lookahead`` how early occurrences are handed to the delayed set (default:
    ``interval``); ``lease`` how long a claim holds before another ticker may take over a
    schedule whose ticker went silent.
    """

    def __init__(
        self,
        app: ExtensionHost,
        *,
        clock: Callable[[], datetime] | None = None,
        interval: float = 1.0,
        lookahead: float | None = None,
        lease: float = 30.0,
        batch: int = 100,
        max_catch_up: int = 1000,
    ) -> None:
        self.app = app
        self.clock = clock or (lambda: utc_now(app.clock))
        self.interval = interval
        self.lookahead = interval if lookahead is None else lookahead
        self.lease = lease
        self.batch = batch
        self.max_catch_up = max_catch_up
        self._keys = app.key_space.schedules
        self._due_key, self._ids_key = self._keys.due, self._keys.ids
        self.ticker = Ticker(self)
        app.adopt(self)  # the app's schedules, unless it already has some
        app.add_middleware(TickerMiddleware(self.ticker))

    def _hash(self, schedule_id: str) -> str:
        return self._keys.record(schedule_id)

    def _queue_name(self, queue: Any) -> str:
        if isinstance(queue, str) and topic_of(queue) is not None:
            return queue  # "topic:NAME": checked by build_schedule
        return self.app.get_queue(queue).name

    async def _client(self) -> Any:
        if not self.app.broker.connected:
            await self.app.connect()
        return self.app.broker.client

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ScheduleError("clock", "must return a timezone-aware datetime")
        return now

    # -- definition --------------------------------------------------------------------

    async def add(
        self,
        schedule_id: str | None = None,
        *,
        queue: Queue | str | None = None,
        topic: str | None = None,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        start: datetime | None = None,
        end: datetime | None = None,
        max_count: int | None = None,
        payload: Any = None,
        priority: Priority | str = Priority.NORMAL,
        headers: dict[str, str] | None = None,
        nonexistent: NonexistentPolicy | str = NonexistentPolicy.NEXT_VALID,
        ambiguous: AmbiguousPolicy | str = AmbiguousPolicy.FIRST,
        missed: MissedPolicy | str = MissedPolicy.ONCE,
        grace: timedelta | float = timedelta(seconds=60),
        paused: bool = False,
        replace: bool = False,
    ) -> Schedule:
        """Store a schedule and return it with its next fire time.

        Give exactly one of ``cron`` (5 fields, matched against wall time in ``timezone``)
        and ``every`` (a fixed interval, anchored at ``start``). Without an id a ULID is
        used. An existing id raises :class:`ScheduleExistsError` unless ``replace=True``,
        which redefines it but keeps its history and its paused state (so declare schedules
        at start-up that way; an unchanged one is not even written)::

            await app.schedules.add("weekly", queue="email", cron="0 9 * * MON",
                                    timezone="America/New_York", replace=True)

        History starts when the schedule is created: occurrences before that never fire
        (``start`` may be in the past to anchor an ``every`` interval; one within ``grace``
        of now fires at once, so ``start=now`` works). ``queue`` must be declared on the
        app (UnknownQueueError otherwise). Or give ``topic`` instead of ``queue``: each
        occurrence is published to the topic, and the routing rules in force then decide
        which queues get it (``app.topics``).
        """
        if (queue is None) == (topic is None):
            raise ScheduleError("queue", "give exactly one of queue or topic")
        schedule = build_schedule(
            schedule_id or new_message_id(now_ms(self.app.clock)),
            self._queue_name(queue) if topic is None else f"{TOPIC_TARGET}{topic}",
            cron=cron, every=every,
            timezone=timezone, start=start, end=end, max_count=max_count, payload=payload,
            priority=priority, headers=headers, nonexistent=nonexistent, ambiguous=ambiguous,
            missed=missed, grace=grace, paused=paused)
        if replace:
            existing = await self._read(schedule.id)
            if existing is not None:
                if existing._definition_json() == schedule._definition_json():
                    return existing  # re-declared unchanged at start-up: nothing to do
                # Keep the history, so occurrences missed while nothing ran still follow
                # ``missed`` after a redeploy, and the pause an operator may have set.
                return await self._save_change(
                    schedule.id, lambda current: _replace(
                        schedule, paused=current.paused, **state_of(current)))
        now = self._now()
        # Nothing before a schedule existed counts as missed: history starts at creation,
        # or just before ``start`` when that is recent enough to be on time (within
        # ``grace``), so ``start=now`` fires at once but a start days ago fires no backlog.
        origin = now
        if schedule.start is not None and schedule.start >= now - schedule.grace:
            origin = min(now, schedule.start - timedelta(microseconds=1))
        nxt = None if paused else self._next(schedule, origin, 0)
        version = await self._save(schedule, "create", None, nxt, origin, now)
        if version == 0:
            raise ScheduleExistsError("schedule_id", f"schedule {schedule.id!r} exists; pass "
                                      "replace=True to redefine it")
        return _replace(schedule, next_fire=nxt, version=version, created_at=now,
                        checked_until=origin)

    async def get(self, schedule_id: str) -> Schedule:
        """The schedule ``schedule_id``; raises :class:`ScheduleNotFoundError`."""
        found = await self._read(schedule_id)
        if found is None:
            raise ScheduleNotFoundError(schedule_id)
        return found

    async def list(self) -> builtins.list[Schedule]:
        """Every schedule, soonest next fire first (paused and finished ones last)."""
        client = await self._client()
        ids = sorted(text(i) for i in await client.smembers(self._ids_key))
        pipe = client.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hgetall(self._hash(schedule_id))
        found = [Schedule._from_hash(raw) for raw in await pipe.execute() if raw]
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(found, key=lambda s: (s.next_fire or far, s.id))

    async def pause(self, schedule_id: str) -> Schedule:
        """Stop firing (from the next tick) until :meth:`resume`."""
        return await self._save_change(schedule_id, lambda s: _replace(s, paused=True))

    async def resume(self, schedule_id: str) -> Schedule:
        """Fire again from the next occurrence after now; occurrences while paused are skipped."""
        current = await self.get(schedule_id)
        if not current.paused:
            return current  # resuming a running schedule must not skip a due occurrence
        return await self._save_change(schedule_id, lambda s: _replace(s, paused=False),
                                       from_now=True)

    async def update(self, schedule_id: str, **changes: Any) -> Schedule:
        """Change definition fields (``cron``, ``every``, ``timezone``, ``payload`` ...).

        Applies from the next occurrence after now, without restarting anything: tickers
        read the definition at every claim. Giving ``every`` clears ``cron`` and vice
        versa. History (``fired_count``, which ``max_count`` counts against) is kept::

            await app.schedules.update("digest", cron="0 8 * * *", payload={"v": 2})
        """
        unknown = sorted(set(changes) - set(DEFINITION_FIELDS))
        if unknown:
            raise ScheduleError(unknown[0], f"cannot be updated; updatable fields: "
                                f"{', '.join(DEFINITION_FIELDS)}")
        if "queue" in changes:
            changes["queue"] = self._queue_name(changes["queue"])
        if "every" in changes and "cron" not in changes:
            changes["cron"] = None
        if "cron" in changes and "every" not in changes:
            changes["every"] = None

        def change(current: Schedule) -> Schedule:
            merged = {name: getattr(current, name) for name in DEFINITION_FIELDS}
            merged.update(changes)
            queue = merged.pop("queue")
            return _replace(build_schedule(current.id, queue, paused=current.paused, **merged),
                            **state_of(current))

        return await self._save_change(schedule_id, change, from_now=True)

    async def delete(self, schedule_id: str) -> bool:
        """Remove the schedule; False if there was none. A tick already past its claim
        may still publish the occurrence it was firing."""
        client = await self._client()
        pipe = client.pipeline(transaction=True)
        pipe.delete(self._hash(schedule_id))
        pipe.zrem(self._due_key, schedule_id)
        pipe.srem(self._ids_key, schedule_id)
        deleted, _, _ = await pipe.execute()
        return bool(deleted)

    async def _read(self, schedule_id: str) -> Schedule | None:
        client = await self._client()
        raw = await client.hgetall(self._hash(schedule_id))
        return Schedule._from_hash(raw) if raw else None

    async def _save(self, schedule: Schedule, mode: str, expected: int | None,
                    nxt: datetime | None, checked: datetime | None, now: datetime) -> int:
        client = await self._client()
        result: int = await self.app.broker.retrying(
            _SAVE, client, [self._due_key, self._ids_key, self._hash(schedule.id)],
            [schedule.id, mode, "" if expected is None else expected,
             schedule._definition_json(), "1" if schedule.paused else "0",
             "" if nxt is None else epoch_ms(nxt), "" if checked is None else epoch_ms(checked),
             epoch_ms(now)])
        return result

    async def _save_change(self, schedule_id: str, change: Callable[[Schedule], Schedule],
                           *, from_now: bool = False) -> Schedule:
        """Read, change and write back under an optimistic check of the version."""
        for _ in range(_SAVE_RETRIES):
            current = await self.get(schedule_id)
            changed = change(current)
            now = self._now()
            checked = current.checked_until or now
            if from_now and checked < now:
                checked = now
            nxt = None if changed.paused else self._next(changed, checked, current.fired_count)
            version = await self._save(changed, "update", current.version, nxt, checked, now)
            if version == -1:
                raise ScheduleNotFoundError(schedule_id)
            if version > 0:
                return _replace(changed, next_fire=nxt, version=version, checked_until=checked)
        raise TidingsError(f"schedule {schedule_id!r} kept changing concurrently; try again")

    @staticmethod
    def _next(schedule: Schedule, after: datetime, fired_count: int) -> datetime | None:
        """The first occurrence after ``after`` (``start`` itself may be one)."""
        if schedule.start is not None and schedule.start > after:
            after = schedule.start - timedelta(microseconds=1)
        return schedule.recurrence.next_after(after, fired_count)

    # -- firing (ticker.py) ------------------------------------------------------------

    async def tick(self, now: datetime | None = None, *,
                   lookahead: float = 0.0) -> builtins.list[Fired]:
        """Fire every schedule due at ``now`` (default: the clock); returns what was published.

        Occurrences up to ``now + lookahead`` seconds are published, those still in the
        future as delayed messages due at the occurrence. Safe to call from any number of
        processes at once. Tests pass ``now`` to travel in time::

            fired = await app.schedules.tick(datetime(2026, 3, 8, 9, 0, tzinfo=UTC))
        """
        return await self.ticker.tick(now, lookahead=lookahead)
