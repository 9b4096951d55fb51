"""Pure time arithmetic for scheduled and recurring messages (no Redis, no clock).

A :class:`Recurrence` is either a 5-field cron expression, matched against *wall-clock*
time in an IANA zone, or a fixed *elapsed-time* interval anchored at ``start`` (or at the
Unix epoch when there is no start, so the phase survives restarts). Every instant returned
is an aware UTC ``datetime``; every "now" is passed in by the caller.

Daylight-saving policy (cron schedules and :func:`resolve_local_time`):

* A wall time that does not exist (spring-forward gap) follows ``nonexistent``:
  ``NEXT_VALID`` shifts it forward by the gap length (02:30 on US spring-forward day runs
  at 03:30 EDT); ``SKIP`` drops that occurrence.
* A wall time that occurs twice (fall-back) follows ``ambiguous``: ``FIRST`` (the earlier
  instant, ``fold=0``), ``SECOND`` (the later, ``fold=1``) or ``BOTH`` (two occurrences).

The defaults are ``NEXT_VALID`` and ``FIRST`` because they are the least surprising: a
daily job runs exactly once every day. Croniter only enumerates naive wall times here; its
own DST handling is not used, and the instants derived from the wall times are sorted and
de-duplicated, so the sequence is strictly increasing even for "*/15 * * * *" in a gap.
Interval schedules ignore both policies: they never look at wall-clock time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from ..core.errors import ScheduleError

__all__ = [
    "AmbiguousPolicy",
    "MissedPolicy",
    "NonexistentPolicy",
    "Recurrence",
    "ScheduleError",
    "at_local",
    "due_occurrences",
    "epoch_ms",
    "occurrence_key",
    "parse_policy",
    "resolve_local_time",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)  # datetime resolution: turns "<" into "<=" exactly
_DAY = timedelta(days=1)
_P = TypeVar("_P", bound=StrEnum)


class NonexistentPolicy(StrEnum):
    """What to do with a local time skipped by a spring-forward gap."""

    NEXT_VALID = "next_valid"
    SKIP = "skip"


class AmbiguousPolicy(StrEnum):
    """What to do with a local time repeated by a fall-back transition."""

    FIRST = "first"
    SECOND = "second"
    BOTH = "both"


class MissedPolicy(StrEnum):
    """How :func:`due_occurrences` treats occurrences that passed while nobody fired them."""

    ONCE = "once"
    ALL = "all"
    SKIP = "skip"


def _zone(name: object, field: str = "timezone") -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ScheduleError(field, "must be a non-empty IANA time zone name")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ScheduleError(field, f"unknown time zone {name!r}") from None


MAX_COUNT = 2**53  # occurrences a schedule may cap itself at (a JSON-safe integer)


def _require_aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime):
        raise ScheduleError(field, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(field, "must be timezone-aware")
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ScheduleError(field, "is out of range (years 1 to 9999 in UTC)") from None
    return value


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware ``value``, floored, in integer
    arithmetic (no float round trip), for the due and fire times stored in Redis."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _conversions(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants of ``wall`` read with fold=0 and fold=1 (equal unless near a shift)."""
    return (
        wall.replace(tzinfo=zone, fold=0).astimezone(UTC),
        wall.replace(tzinfo=zone, fold=1).astimezone(UTC),
    )


def _shift_near(moment: datetime, zone: ZoneInfo) -> timedelta:
    """How far the zone's UTC offset moves within a day either side of ``moment``."""
    offsets: list[timedelta] = []
    for delta in (-_DAY, timedelta(0), _DAY):
        try:
            offsets.append((moment + delta).astimezone(zone).utcoffset() or timedelta(0))
        except OverflowError:
            continue
    return max(offsets) - min(offsets)


def parse_policy(enum: type[_P], value: object, field: str) -> _P:
    """``value`` (a member or its string) as a member of ``enum``; ScheduleError naming
    ``field`` and the allowed values otherwise."""
    try:
        return enum(str(value))
    except ValueError:
        raise ScheduleError(field, f"must be one of {', '.join(enum)}") from None


def _resolve(
    wall: datetime, zone: ZoneInfo, nonexistent: NonexistentPolicy, ambiguous: AmbiguousPolicy
) -> list[datetime]:
    first, second = _conversions(wall, zone)
    if first == second:
        return [first]
    if first < second:  # fold=0 reads the earlier (pre-transition) offset: a repeated hour
        if ambiguous is AmbiguousPolicy.FIRST:
            return [first]
        return [second] if ambiguous is AmbiguousPolicy.SECOND else [first, second]
    # In a gap, PEP 495 fold=0 applies the pre-gap offset, i.e. shifts forward by the gap.
    return [first] if nonexistent is NonexistentPolicy.NEXT_VALID else []


def _local_input(local: datetime | tuple[date, time]) -> datetime:
    if isinstance(local, tuple):
        day, clock = local
        local = datetime.combine(day, clock)
    if not isinstance(local, datetime) or local.tzinfo is not None:
        raise ScheduleError("local", "must be a naive datetime (or a (date, time) pair)")
    return local


def resolve_local_time(
    local: datetime | tuple[date, time],
    zone: str,
    *,
    nonexistent: NonexistentPolicy = NonexistentPolicy.NEXT_VALID,
    ambiguous: AmbiguousPolicy = AmbiguousPolicy.FIRST,
) -> list[datetime]:
    """All UTC instants (0, 1 or 2, ascending) at which wall time ``local`` occurs in ``zone``."""
    return _resolve(
        _local_input(local),
        _zone(zone, "zone"),
        parse_policy(NonexistentPolicy, nonexistent, "nonexistent"),
        parse_policy(AmbiguousPolicy, ambiguous, "ambiguous"),
    )


def at_local(
    local: datetime | tuple[date, time],
    zone: str,
    *,
    nonexistent: NonexistentPolicy = NonexistentPolicy.NEXT_VALID,
    ambiguous: AmbiguousPolicy = AmbiguousPolicy.FIRST,
) -> datetime:
    """The single UTC instant for a one-off send at wall time ``local`` in ``zone``.

    Raises :class:`ScheduleError` when the policy leaves no instant (``SKIP`` in a gap) and
    refuses ``BOTH``, which cannot be expressed as one instant.
    """
    if ambiguous == AmbiguousPolicy.BOTH:
        raise ScheduleError("ambiguous", "BOTH gives two instants; use resolve_local_time")
    instants = resolve_local_time(local, zone, nonexistent=nonexistent, ambiguous=ambiguous)
    if not instants:
        raise ScheduleError("local", f"{_local_input(local)} does not exist in {zone}")
    return instants[0]


@dataclass(frozen=True)
class Recurrence:
    """A recurring schedule; prefer :meth:`from_cron` and :meth:`from_interval`.

    ``start`` and ``end`` are inclusive bounds. ``max_count`` caps how many occurrences
    ever fire; the caller keeps the running ``fired_count`` and passes it in.
    """

    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    max_count: int | None = None
    nonexistent: NonexistentPolicy = NonexistentPolicy.NEXT_VALID
    ambiguous: AmbiguousPolicy = AmbiguousPolicy.FIRST

    def __post_init__(self) -> None:
        # Accepting the plain strings lets a schedule round-trip through JSON.
        for name, enum in (("nonexistent", NonexistentPolicy), ("ambiguous", AmbiguousPolicy)):
            object.__setattr__(self, name, parse_policy(enum, getattr(self, name), name))
        self.validate()

    @classmethod
    def from_cron(
        cls,
        expr: str,
        timezone: str = "UTC",
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        max_count: int | None = None,
        nonexistent: NonexistentPolicy = NonexistentPolicy.NEXT_VALID,
        ambiguous: AmbiguousPolicy = AmbiguousPolicy.FIRST,
    ) -> Recurrence:
        """A schedule firing whenever local wall time in ``timezone`` matches ``expr``."""
        return cls(expr, None, timezone, start, end, max_count, nonexistent, ambiguous)

    @classmethod
    def from_interval(
        cls,
        every: timedelta,
        *,
        timezone: str = "UTC",
        start: datetime | None = None,
        end: datetime | None = None,
        max_count: int | None = None,
    ) -> Recurrence:
        """A schedule firing at ``start + k * every`` (epoch-anchored without ``start``)."""
        return cls(None, every, timezone, start, end, max_count)

    def validate(self) -> None:
        """Raise :class:`ScheduleError` naming the first invalid field."""
        _zone(self.timezone)
        if (self.cron is None) == (self.every is None):
            raise ScheduleError("cron", "exactly one of 'cron' and 'every' must be set")
        if self.cron is not None:
            _check_cron(self.cron)
        if self.every is not None:
            if not isinstance(self.every, timedelta) or self.every <= timedelta(0):
                raise ScheduleError("every", "must be a positive timedelta")
            if self.every < timedelta(seconds=1):
                # occurrence_key has one-second resolution; shorter would collide.
                raise ScheduleError("every", "must be at least one second")
        if self.start is not None:
            _require_aware(self.start, "start")
        if self.end is not None:
            _require_aware(self.end, "end")
            if self.start is not None and self.end < self.start:
                raise ScheduleError("end", "must not be before start")
        if self.max_count is not None and (
            isinstance(self.max_count, bool)
            or not isinstance(self.max_count, int)
            or not 1 <= self.max_count <= MAX_COUNT
        ):
            raise ScheduleError("max_count", f"must be an integer from 1 to {MAX_COUNT}")

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)

    def occurrences_after(
        self, after: datetime, limit: int, fired_count: int = 0
    ) -> list[datetime]:
        """Up to ``limit`` instants strictly after ``after``, honouring start/end/max_count."""
        _require_aware(after, "after")
        if limit < 0:
            raise ScheduleError("limit", "must be >= 0")
        budget = min(limit, self._remaining(fired_count))
        out: list[datetime] = []
        if budget <= 0:
            return out
        for instant in self._instants(after):
            out.append(instant)
            if len(out) >= budget:
                break
        return out

    def next_after(self, after: datetime, fired_count: int = 0) -> datetime | None:
        """The first instant strictly after ``after``, or None when the schedule is over."""
        found = self.occurrences_after(after, 1, fired_count)
        return found[0] if found else None

    def occurrences_between(
        self, after: datetime, until: datetime, *, limit: int | None = None
    ) -> list[datetime]:
        """Instants ``t`` with ``after < t <= until`` (start/end honoured, max_count not)."""
        _require_aware(after, "after")
        _require_aware(until, "until")
        out: list[datetime] = []
        for instant in self._instants(after):
            if instant > until or (limit is not None and len(out) >= limit):
                break
            out.append(instant)
        return out

    def _remaining(self, fired_count: int) -> int | float:
        if fired_count < 0:
            raise ScheduleError("fired_count", "must be >= 0")
        return float("inf") if self.max_count is None else max(0, self.max_count - fired_count)

    def _instants(self, after: datetime) -> Iterator[datetime]:
        """Every occurrence strictly after ``after`` within [start, end], ascending."""
        if self.start is not None and self.start > after:
            after = self.start - _TICK
        source = self._interval_instants(after) if self.every else self._cron_instants(after)
        for instant in source:
            if self.end is not None and instant > self.end:
                return
            yield instant

    def _interval_instants(self, after: datetime) -> Iterator[datetime]:
        assert self.every is not None
        anchor = (self.start or _EPOCH).astimezone(UTC)
        # timedelta // timedelta is exact integer arithmetic: no float drift over years.
        k = 0 if after < anchor else (after - anchor) // self.every + 1
        while True:
            try:
                instant = anchor + k * self.every
            except OverflowError:
                return
            yield instant
            k += 1

    def _cron_instants(self, after: datetime) -> Iterator[datetime]:
        assert self.cron is not None
        zone = self.zone
        # Start early enough that a fold or gap just after ``after`` cannot hide a wall time
        # whose instant is later than ``after`` but whose wall clock reads earlier.
        lookback = _shift_near(after, zone) + timedelta(seconds=1)
        base = after.astimezone(zone).replace(tzinfo=None) - lookback
        walls = croniter(self.cron, base)
        pending: list[datetime] = []
        last: datetime | None = None
        while True:
            try:
                wall: datetime | None = walls.get_next(datetime)
            except (ValueError, OverflowError):  # CroniterBadDateError: no match ever again
                wall = None
            if wall is None:
                bound = datetime.max.replace(tzinfo=UTC)
            else:
                for instant in _resolve(wall, zone, self.nonexistent, self.ambiguous):
                    if instant > after:
                        heapq.heappush(pending, instant)
                # Any later wall time reads later on the local clock, so its instant is after
                # the earliest reading of this one: everything up to here is final.
                bound = min(_conversions(wall, zone))
            while pending and pending[0] <= bound:
                instant = heapq.heappop(pending)
                if last is None or instant > last:
                    last = instant
                    yield instant
            if wall is None or (self.end is not None and bound > self.end):
                return


def _check_cron(expr: object) -> None:
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise ScheduleError("cron", "must have 5 fields: minute hour day-of-month month weekday")
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ScheduleError("cron", f"{expr!r} never matches any date") from None
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError("cron", f"invalid cron expression {expr!r}: {exc}") from None


def due_occurrences(
    rec: Recurrence,
    last_fired: datetime | None,
    now: datetime,
    policy: MissedPolicy = MissedPolicy.ONCE,
    fired_count: int = 0,
    *,
    grace: timedelta = timedelta(seconds=60),
    max_batch: int = 1000,
) -> list[datetime]:
    """Occurrences to enqueue at ``now``, ascending; their keys make re-runs idempotent.

    An occurrence at most ``grace`` old is *due*; an older one not after ``last_fired`` is
    *missed*. Due occurrences always fire. Missed ones: ``ALL`` fires them, oldest first and
    at most ``max_batch`` per call (record the last one returned and call again to catch up);
    ``ONCE`` coalesces them into the latest, fired only when nothing is due anyway; ``SKIP``
    drops them. Without ``last_fired`` history starts at ``start``, or at ``now - grace``.
    """
    _require_aware(now, "now")
    policy = parse_policy(MissedPolicy, policy, "policy")
    if last_fired is not None:
        after = _require_aware(last_fired, "last_fired")
    elif rec.start is not None:
        after = rec.start - _TICK
    else:
        after = now - grace - _TICK
    budget = min(max_batch, rec._remaining(fired_count))
    if budget <= 0 or after >= now:
        return []
    cutoff = now - grace - _TICK  # the newest instant that counts as missed
    if policy == MissedPolicy.ALL:
        return rec.occurrences_between(after, now, limit=int(budget))
    due = rec.occurrences_between(max(after, cutoff), now, limit=int(budget))
    if due or policy == MissedPolicy.SKIP or cutoff <= after:
        return due
    latest = _latest_between(rec, after, cutoff)
    return [] if latest is None else [latest]


def _latest_between(rec: Recurrence, after: datetime, until: datetime) -> datetime | None:
    """The last instant in (after, until], probing doubling windows back from ``until``."""
    window = rec.every or timedelta(hours=1)
    while True:
        lower = max(after, until - window)
        found = rec.occurrences_between(lower, until)
        if found:
            return found[-1]
        if lower == after:
            return None
        window *= 2


def occurrence_key(schedule_id: str, when: datetime) -> str:
    """A stable idempotency key for one occurrence of one schedule (one-second resolution)."""
    seconds = (_require_aware(when, "when") - _EPOCH) // timedelta(seconds=1)
    return f"sched:{schedule_id}:{seconds}"
