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
key :func:`~tidings.recurrence.occurrence_key`, so even a ticker that lost its claim half-way
(it stalled past the lease) cannot make a second message for the same occurrence. The
:class:`~tidings.schedule.Schedule` record itself (validation, payload templates, stored
form) is in :mod:`tidings.schedule`.

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

import asyncio
import builtins
import logging
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace as _replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    BrokerUnavailableError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    TidingsError,
    UnknownQueueError,
    ValidationError,
)
from ..core.message import Priority, new_message_id
from ..engine.broker import TRANSIENT, text
from ..engine.scripts import Script
from .recurrence import (
    AmbiguousPolicy,
    MissedPolicy,
    NonexistentPolicy,
    ScheduleError,
    at_local,
    due_occurrences,
    epoch_ms,
    occurrence_key,
    parse_policy,
)
from .schedule import DEFINITION_FIELDS, Schedule, build_schedule, render, state_of

if TYPE_CHECKING:
    from ..app import Tidings
    from ..queues.queue import Queue
    from ..worker import Worker

__all__ = [
    "Fired",
    "Schedule",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "Schedules",
    "publish_local",
    "schedules",
]

log = logging.getLogger("tidings.scheduling.schedules")

_SAVE_RETRIES = 20


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Fired:
    """One occurrence a tick published (``message_id`` is the first one's for a duplicate)."""

    schedule_id: str
    occurrence: datetime
    message_id: str


class _Scripts:
    def __init__(self) -> None:
        self.claim = Script("schedule_claim")
        self.commit = Script("schedule_commit")
        self.save = Script("schedule_save")


_SCRIPTS = _Scripts()
_INSTANCES: weakref.WeakKeyDictionary[Tidings, Schedules] = weakref.WeakKeyDictionary()


def schedules(app: Tidings) -> Schedules:
    """The app's :class:`Schedules` (created on first use; the same object afterwards)."""
    found = _INSTANCES.get(app)
    if found is None:
        found = _INSTANCES[app] = Schedules(app)
    return found


class Schedules:
    """Recurring schedules of one app; use ``app.schedules`` (or :func:`schedules`).

    Creating it registers the ticker as a worker service, so every worker of the app fires
    due schedules. ``clock`` (a callable returning an aware UTC datetime) is injectable for
    tests; ``interval`` is the tick period in seconds; ``lookahead`` how early occurrences
    are handed to the delayed set (default: ``interval``); ``lease`` how long a claim holds
    before another ticker may take over a schedule whose ticker went silent.
    """

    def __init__(
        self,
        app: Tidings,
        *,
        clock: Callable[[], datetime] | None = None,
        interval: float = 1.0,
        lookahead: float | None = None,
        lease: float = 30.0,
        batch: int = 100,
        max_catch_up: int = 1000,
    ) -> None:
        self.app = app
        self.clock = clock or _utc_now
        self.interval = interval
        self.lookahead = interval if lookahead is None else lookahead
        self.lease = lease
        self.batch = batch
        self.max_catch_up = max_catch_up
        tag = f"{app.settings.key_prefix}:{{schedules}}"
        self._due_key = f"{tag}:due"
        self._ids_key = f"{tag}:ids"
        self._hash_prefix = f"{tag}:s:"
        _INSTANCES.setdefault(app, self)
        app.add_worker_service(self._ticker)

    def _hash(self, schedule_id: str) -> str:
        return self._hash_prefix + schedule_id

    def _queue_name(self, queue: Any) -> str:
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
        queue: Queue | str,
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
        app (UnknownQueueError otherwise).
        """
        schedule = build_schedule(
            schedule_id or new_message_id(), self._queue_name(queue), cron=cron, every=every,
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
            _SCRIPTS.save, client, [self._due_key, self._ids_key, self._hash(schedule.id)],
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

    # -- firing ------------------------------------------------------------------------

    async def tick(
        self, now: datetime | None = None, *, lookahead: float = 0.0
    ) -> builtins.list[Fired]:
        """Fire every schedule due at ``now`` (default: the clock); returns what was published.

        Occurrences up to ``now + lookahead`` seconds are published, those still in the
        future as delayed messages due at the occurrence. Safe to call from any number of
        processes at once. Tests pass ``now`` to travel in time::

            fired = await app.schedules.tick(datetime(2026, 3, 8, 9, 0, tzinfo=UTC))
        """
        now = self._now() if now is None else now
        if now.tzinfo is None:
            raise ScheduleError("now", "must be timezone-aware")
        horizon = now + timedelta(seconds=lookahead)
        fired: builtins.list[Fired] = []
        while True:
            claimed = await self._claim(now, horizon)
            behind = False
            for schedule, token in claimed:
                batch, more = await self._fire(schedule, token, horizon)
                fired += batch
                behind = behind or more
            # A full claim may have left due schedules unclaimed; a schedule catching up
            # with missed=all is due again at once.
            if len(claimed) < self.batch and not behind:
                return fired

    async def _claim(self, now: datetime, horizon: datetime) -> builtins.list[tuple[Schedule, str]]:
        client = await self._client()
        bound = epoch_ms(horizon)
        ids = [text(i) for i in await client.zrangebyscore(
            self._due_key, "-inf", bound, start=0, num=self.batch)]
        if not ids:
            return []
        token = new_message_id()
        lease_end = epoch_ms(now) + int(self.lease * 1000)
        rows = await self.app.broker.retrying(
            _SCRIPTS.claim, client, [self._due_key, *(self._hash(i) for i in ids)],
            [bound, lease_end, token, *ids])
        out: builtins.list[tuple[Schedule, str]] = []
        for _, flat in rows:
            raw = dict(zip(flat[::2], flat[1::2], strict=True))
            out.append((Schedule._from_hash(raw), token))
        return out

    async def _fire(
        self, schedule: Schedule, token: str, horizon: datetime
    ) -> tuple[builtins.list[Fired], bool]:
        """Publish a claimed schedule's due occurrences and commit; True if still behind."""
        rec = schedule.recurrence
        occurrences = due_occurrences(
            rec, schedule.checked_until, horizon, schedule.missed, schedule.fired_count,
            grace=schedule.grace, max_batch=self.max_catch_up)
        # Catching up with missed=all in bounded batches: continue from the last one fired,
        # which keeps the schedule due, so the next tick picks up the rest.
        behind = schedule.missed is MissedPolicy.ALL and len(occurrences) >= self.max_catch_up
        checked = occurrences[-1] if behind else horizon
        fired: builtins.list[Fired] = []
        error = ""
        try:
            queue = self.app.get_queue(schedule.queue)
        except UnknownQueueError:
            # Stored by an app that declares the queue, ticked by one that does not: leave
            # the claim to lapse, so a ticker whose app declares it fires the occurrences.
            log.error("schedule %s targets queue %r, which this app does not declare; left "
                      "for a worker whose app does (retried after the %.0fs claim)",
                      schedule.id, schedule.queue, self.lease)
            return [], False
        for when in occurrences:
            headers = {**schedule.headers, "schedule_id": schedule.id,
                       "occurrence": when.astimezone(UTC).isoformat()}
            try:
                msg_id = await queue.publish(
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
        client = await self._client()
        committed = await self.app.broker.retrying(
            _SCRIPTS.commit, client, [self._due_key, self._hash(schedule.id)],
            [schedule.id, token, schedule.version, epoch_ms(checked),
             epoch_ms(occurrences[-1]) if occurrences else "", len(occurrences),
             "" if nxt is None else epoch_ms(nxt), error])
        if not committed:
            log.info("schedule %s: claim lost before commit (deleted, or re-claimed after the "
                     "lease); its occurrences were deduplicated by their keys", schedule.id)
        return fired, behind and bool(committed)

    async def _ticker(self, worker: Worker) -> None:
        """The worker service: tick every ``interval`` seconds until the worker stops."""
        failures = 0
        while True:
            try:
                await self.tick(lookahead=self.lookahead)
                failures = 0
                pause = self.interval
            except (*TRANSIENT, BrokerUnavailableError) as exc:
                failures += 1
                pause = min(30.0, self.interval * 2 ** min(failures, 5))
                log.warning("schedule tick failed (%s); retrying in %.1fs", exc, pause)
            except Exception:
                # A bug or a corrupt schedule must not end the ticker of a running worker.
                log.exception("schedule tick failed")
                pause = self.interval
            # Jitter keeps the tickers of many workers from hitting the server in lockstep.
            await asyncio.sleep(pause * (0.9 + 0.2 * random.random()))


async def publish_local(
    queue: Queue,
    payload: Any,
    *,
    at: datetime | tuple[date, time],
    zone: str,
    nonexistent: NonexistentPolicy | str = NonexistentPolicy.NEXT_VALID,
    ambiguous: AmbiguousPolicy | str = AmbiguousPolicy.FIRST,
    priority: Priority | str = Priority.NORMAL,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
    correlation_id: str | None = None,
    expires_in: timedelta | float | None = None,
    max_attempts: int | None = None,
) -> str:
    """Publish ``payload`` to be delivered when the wall clock in ``zone`` reads ``at``.

    ``at`` is a *naive* local time (or a ``(date, time)`` pair); the daylight-saving
    policies decide a time skipped by a spring-forward gap (``next_valid`` moves it forward
    by the gap, ``skip`` refuses it) or repeated by a fall-back (``first`` / ``second``).
    A time already past is delivered at once. Returns the message id::

        await publish_local(email, {"to": "a@b.c"}, at=datetime(2026, 12, 1, 9, 0),
                            zone="Asia/Tokyo")

    Bad input raises :class:`~tidings.recurrence.ScheduleError` (a ``ValidationError``)
    naming the field: ``at`` (aware, or a time that does not exist with ``skip``), ``zone``,
    ``nonexistent`` or ``ambiguous``.
    """
    when = local_instant(at, zone, nonexistent=nonexistent, ambiguous=ambiguous)
    return await queue.publish(payload, priority=priority, idempotency_key=idempotency_key,
                               headers=headers, correlation_id=correlation_id, send_at=when,
                               expires_in=expires_in, max_attempts=max_attempts)


def local_instant(
    at: datetime | tuple[date, time],
    zone: str,
    *,
    nonexistent: NonexistentPolicy | str = NonexistentPolicy.NEXT_VALID,
    ambiguous: AmbiguousPolicy | str = AmbiguousPolicy.FIRST,
) -> datetime:
    """The UTC instant of wall time ``at`` in ``zone`` (see :func:`publish_local`)."""
    if isinstance(at, datetime) and at.tzinfo is not None:
        raise ScheduleError("at", "must be a naive local time; the zone goes in 'zone' (for an "
                            "absolute instant use publish(send_at=...))")
    if not isinstance(at, datetime | tuple):
        raise ScheduleError("at", "must be a naive datetime or a (date, time) pair")
    gap = parse_policy(NonexistentPolicy, nonexistent, "nonexistent")
    fold = parse_policy(AmbiguousPolicy, ambiguous, "ambiguous")
    if fold is AmbiguousPolicy.BOTH:
        raise ScheduleError("ambiguous", "'both' would send twice; choose 'first' or 'second'")
    try:
        return at_local(at, zone, nonexistent=gap, ambiguous=fold)
    except ScheduleError as exc:
        if exc.field == "local":
            raise ScheduleError("at", exc.reason) from None
        raise
