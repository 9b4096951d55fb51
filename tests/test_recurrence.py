"""tidings.scheduling.recurrence: DST policies, cron/interval schedules, missed occurrences.

Expected instants are hard-coded UTC values derived from the zones' published rules (and
checked against zoneinfo in test_transition_facts), never recomputed with the code under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from tidings.scheduling.recurrence import (
    AmbiguousPolicy,
    MissedPolicy,
    NonexistentPolicy,
    Recurrence,
    ScheduleError,
    at_local,
    due_occurrences,
    occurrence_key,
    resolve_local_time,
)

NY = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"
KOLKATA = "Asia/Kolkata"
NEXT, SKIP = NonexistentPolicy.NEXT_VALID, NonexistentPolicy.SKIP
FIRST, SECOND, BOTH = AmbiguousPolicy.FIRST, AmbiguousPolicy.SECOND, AmbiguousPolicy.BOTH


def z(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def local_day(rec: Recurrence, day: date) -> list[datetime]:
    """Occurrences whose local date (in the schedule's zone) is ``day``."""
    zone = ZoneInfo(rec.timezone)
    midnight_utc = datetime.combine(day, time(), UTC)
    window = rec.occurrences_between(midnight_utc - hours(15), midnight_utc + hours(39))
    return [t for t in window if t.astimezone(zone).date() == day]


@pytest.mark.parametrize(
    ("zone", "utc_instant", "before", "after"),
    [
        (NY, z(2026, 3, 8, 7), hours(-5), hours(-4)),
        (NY, z(2026, 11, 1, 6), hours(-4), hours(-5)),
        (LONDON, z(2026, 3, 29, 1), hours(0), hours(1)),
        (LONDON, z(2026, 10, 25, 1), hours(1), hours(0)),
        (LORD_HOWE, z(2026, 4, 4, 15), hours(11), hours(10.5)),
        (LORD_HOWE, z(2026, 10, 3, 15, 30), hours(10.5), hours(11)),
    ],
)
def test_transition_facts(
    zone: str, utc_instant: datetime, before: timedelta, after: timedelta
) -> None:
    tz = ZoneInfo(zone)
    assert (utc_instant - timedelta(seconds=1)).astimezone(tz).utcoffset() == before
    assert utc_instant.astimezone(tz).utcoffset() == after


@pytest.mark.parametrize(
    ("zone", "wall", "policy", "expected"),
    [
        # Gaps: NEXT_VALID shifts by the gap length, SKIP gives nothing.
        (NY, datetime(2026, 3, 8, 2, 30), NEXT, [z(2026, 3, 8, 7, 30)]),  # 03:30 EDT
        (NY, datetime(2026, 3, 8, 2, 30), SKIP, []),
        (LONDON, datetime(2026, 3, 29, 1, 30), NEXT, [z(2026, 3, 29, 1, 30)]),  # 02:30 BST
        (LONDON, datetime(2026, 3, 29, 1, 30), SKIP, []),
        (LORD_HOWE, datetime(2026, 10, 4, 2, 15), NEXT, [z(2026, 10, 3, 15, 45)]),  # 02:45 +11
        (LORD_HOWE, datetime(2026, 10, 4, 2, 15), SKIP, []),
        # Folds.
        (NY, datetime(2026, 11, 1, 1, 30), FIRST, [z(2026, 11, 1, 5, 30)]),
        (NY, datetime(2026, 11, 1, 1, 30), SECOND, [z(2026, 11, 1, 6, 30)]),
        (NY, datetime(2026, 11, 1, 1, 30), BOTH, [z(2026, 11, 1, 5, 30), z(2026, 11, 1, 6, 30)]),
        (LONDON, datetime(2026, 10, 25, 1, 30), FIRST, [z(2026, 10, 25, 0, 30)]),
        (LONDON, datetime(2026, 10, 25, 1, 30), SECOND, [z(2026, 10, 25, 1, 30)]),
        (LORD_HOWE, datetime(2026, 4, 5, 1, 45), FIRST, [z(2026, 4, 4, 14, 45)]),
        (LORD_HOWE, datetime(2026, 4, 5, 1, 45), SECOND, [z(2026, 4, 4, 15, 15)]),
        (
            LORD_HOWE,
            datetime(2026, 4, 5, 1, 45),
            BOTH,
            [z(2026, 4, 4, 14, 45), z(2026, 4, 4, 15, 15)],
        ),
        # Ordinary times are unaffected by either policy.
        (NY, datetime(2026, 3, 8, 3, 0), SKIP, [z(2026, 3, 8, 7)]),
        (NY, datetime(2026, 11, 1, 2, 0), BOTH, [z(2026, 11, 1, 7)]),
        (KOLKATA, datetime(2026, 7, 1, 9, 0), BOTH, [z(2026, 7, 1, 3, 30)]),
    ],
)
def test_resolve_local_time(
    zone: str,
    wall: datetime,
    policy: NonexistentPolicy | AmbiguousPolicy,
    expected: list[datetime],
) -> None:
    if isinstance(policy, NonexistentPolicy):
        got = resolve_local_time(wall, zone, nonexistent=policy)
    else:
        got = resolve_local_time(wall, zone, ambiguous=policy)
    assert got == expected
    assert all(t.tzinfo is UTC for t in got)


def test_resolve_accepts_date_and_time_pair() -> None:
    pair = (date(2026, 3, 8), time(2, 30))
    assert resolve_local_time(pair, NY) == [z(2026, 3, 8, 7, 30)]


def test_at_local() -> None:
    assert at_local(datetime(2026, 11, 1, 1, 30), NY) == z(2026, 11, 1, 5, 30)
    assert at_local(datetime(2026, 11, 1, 1, 30), NY, ambiguous=SECOND) == z(2026, 11, 1, 6, 30)
    assert at_local((date(2026, 1, 15), time(9)), KOLKATA) == z(2026, 1, 15, 3, 30)
    with pytest.raises(ScheduleError) as exc:
        at_local(datetime(2026, 3, 8, 2, 30), NY, nonexistent=SKIP)
    assert exc.value.field == "local"
    with pytest.raises(ScheduleError) as exc:
        at_local(datetime(2026, 11, 1, 1, 30), NY, ambiguous=BOTH)
    assert exc.value.field == "ambiguous"


# (zone, cron, local day, {policy: expected instants that local day}) per transition day.
GAP_CASES = [
    (NY, "30 2 * * *", date(2026, 3, 8), z(2026, 3, 8, 7, 30)),
    (LONDON, "30 1 * * *", date(2026, 3, 29), z(2026, 3, 29, 1, 30)),
    (LORD_HOWE, "15 2 * * *", date(2026, 10, 4), z(2026, 10, 3, 15, 45)),
]
FOLD_CASES = [
    (NY, "30 1 * * *", date(2026, 11, 1), z(2026, 11, 1, 5, 30), z(2026, 11, 1, 6, 30)),
    (LONDON, "30 1 * * *", date(2026, 10, 25), z(2026, 10, 25, 0, 30), z(2026, 10, 25, 1, 30)),
    (LORD_HOWE, "45 1 * * *", date(2026, 4, 5), z(2026, 4, 4, 14, 45), z(2026, 4, 4, 15, 15)),
]
ALL_POLICIES = list(itertools.product(NonexistentPolicy, AmbiguousPolicy))


@pytest.mark.parametrize(("nonexistent", "ambiguous"), ALL_POLICIES)
@pytest.mark.parametrize(("zone", "cron", "day", "shifted"), GAP_CASES)
def test_daily_cron_on_gap_day(
    zone: str,
    cron: str,
    day: date,
    shifted: datetime,
    nonexistent: NonexistentPolicy,
    ambiguous: AmbiguousPolicy,
) -> None:
    rec = Recurrence.from_cron(cron, zone, nonexistent=nonexistent, ambiguous=ambiguous)
    assert local_day(rec, day) == ([shifted] if nonexistent is NEXT else [])
    # The neighbouring days are ordinary: exactly one run, at the cron's wall time.
    for neighbour in (day - timedelta(days=1), day + timedelta(days=1)):
        (only,) = local_day(rec, neighbour)
        assert only.astimezone(ZoneInfo(zone)).strftime("%H:%M") == cron_wall(cron)


@pytest.mark.parametrize(("nonexistent", "ambiguous"), ALL_POLICIES)
@pytest.mark.parametrize(("zone", "cron", "day", "first", "second"), FOLD_CASES)
def test_daily_cron_on_fold_day(
    zone: str,
    cron: str,
    day: date,
    first: datetime,
    second: datetime,
    nonexistent: NonexistentPolicy,
    ambiguous: AmbiguousPolicy,
) -> None:
    rec = Recurrence.from_cron(cron, zone, nonexistent=nonexistent, ambiguous=ambiguous)
    expected = {FIRST: [first], SECOND: [second], BOTH: [first, second]}[ambiguous]
    assert local_day(rec, day) == expected
    for neighbour in (day - timedelta(days=1), day + timedelta(days=1)):
        (only,) = local_day(rec, neighbour)
        assert only.astimezone(ZoneInfo(zone)).strftime("%H:%M") == cron_wall(cron)


def cron_wall(cron: str) -> str:
    minute, hour = cron.split()[:2]
    return f"{int(hour):02d}:{int(minute):02d}"


@pytest.mark.parametrize(
    ("zone", "cron"),
    [
        (NY, "30 2 * * *"),
        (NY, "30 1 * * *"),
        (LONDON, "30 1 * * *"),
        (LORD_HOWE, "15 2 * * *"),
        (LORD_HOWE, "45 1 * * *"),
    ],
)
def test_default_policy_runs_daily_job_exactly_once_every_day(zone: str, cron: str) -> None:
    rec = Recurrence.from_cron(cron, zone)
    tz = ZoneInfo(zone)
    year = rec.occurrences_between(
        datetime(2026, 1, 1, tzinfo=tz) - timedelta(microseconds=1), datetime(2027, 1, 1, tzinfo=tz)
    )
    days = [t.astimezone(tz).date() for t in year]
    assert len(year) == 365
    assert days == [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]


def test_weekday_cron_stays_at_local_nine_across_dst() -> None:
    rec = Recurrence.from_cron("0 9 * * 1-5", NY)
    spring = rec.occurrences_after(z(2026, 3, 5, 15), 3)
    # Fri 6 March is EST (14:00Z); Mon 9 and Tue 10 are EDT (13:00Z).
    assert spring == [z(2026, 3, 6, 14), z(2026, 3, 9, 13), z(2026, 3, 10, 13)]
    autumn = rec.occurrences_after(z(2026, 10, 29, 14), 3)
    assert autumn == [z(2026, 10, 30, 13), z(2026, 11, 2, 14), z(2026, 11, 3, 14)]
    tz = ZoneInfo(NY)
    year = rec.occurrences_between(z(2026, 1, 1), z(2027, 1, 1))
    assert len(year) == 261  # weekdays in 2026
    assert {t.astimezone(tz).strftime("%H:%M") for t in year} == {"09:00"}
    assert {t.astimezone(tz).weekday() for t in year} == {0, 1, 2, 3, 4}


def test_zone_without_dst_is_a_fixed_utc_time() -> None:
    rec = Recurrence.from_cron("0 9 * * *", KOLKATA)
    year = rec.occurrences_between(z(2025, 12, 31, 12), z(2026, 12, 31, 12))
    assert len(year) == 365
    assert {(t.hour, t.minute) for t in year} == {(3, 30)}


def test_interval_is_elapsed_time_across_dst() -> None:
    start = z(2026, 3, 8, 5)  # 00:00 EST
    rec = Recurrence.from_interval(hours(1), timezone=NY, start=start)
    got = rec.occurrences_after(start - timedelta(seconds=1), 5)
    assert got == [start + hours(i) for i in range(5)]
    # Wall clock skips 02:00 because the interval ignores it.
    walls = [t.astimezone(ZoneInfo(NY)).strftime("%H:%M") for t in got]
    assert walls == ["00:00", "01:00", "03:00", "04:00", "05:00"]
    daily = Recurrence.from_interval(hours(24), timezone=NY, start=z(2026, 3, 7, 14))  # 09:00 EST
    assert daily.next_after(z(2026, 3, 7, 14)) == z(2026, 3, 8, 14)  # 10:00 EDT


def test_interval_without_start_is_epoch_anchored() -> None:
    rec = Recurrence.from_interval(timedelta(minutes=90))
    # 2026-01-01T00:00Z is 20454 days after the epoch, a multiple of 90 minutes.
    assert rec.occurrences_after(z(2026, 1, 1, 0, 30), 2) == [
        z(2026, 1, 1, 1, 30),
        z(2026, 1, 1, 3),
    ]
    assert rec.next_after(z(2026, 1, 1, 1, 30)) == z(2026, 1, 1, 3)  # strictly after


def test_start_end_inclusive_and_max_count() -> None:
    rec = Recurrence.from_cron(
        "0 12 * * *", "UTC", start=z(2026, 5, 1, 12), end=z(2026, 5, 4, 12), max_count=3
    )
    assert rec.occurrences_after(z(2020, 1, 1), 10) == [
        z(2026, 5, 1, 12),
        z(2026, 5, 2, 12),
        z(2026, 5, 3, 12),
    ]
    assert rec.occurrences_after(z(2026, 5, 1, 12), 10, fired_count=1) == [
        z(2026, 5, 2, 12),
        z(2026, 5, 3, 12),
    ]
    assert rec.next_after(z(2026, 5, 3, 12), fired_count=3) is None
    unlimited = Recurrence.from_cron("0 12 * * *", start=z(2026, 5, 1, 12), end=z(2026, 5, 4, 12))
    assert unlimited.occurrences_after(z(2020, 1, 1), 10)[-1] == z(2026, 5, 4, 12)
    assert unlimited.next_after(z(2026, 5, 4, 12)) is None
    interval = Recurrence.from_interval(hours(6), start=z(2026, 5, 1), end=z(2026, 5, 1, 13))
    assert interval.occurrences_after(z(2026, 4, 1), 10) == [
        z(2026, 5, 1),
        z(2026, 5, 1, 6),
        z(2026, 5, 1, 12),
    ]


@pytest.mark.parametrize("nonexistent", list(NonexistentPolicy))
def test_quarter_hour_cron_in_gap_is_strictly_increasing(nonexistent: NonexistentPolicy) -> None:
    rec = Recurrence.from_cron("*/15 * * * *", NY, nonexistent=nonexistent)
    got = rec.occurrences_after(z(2026, 3, 8, 6, 20), 6)
    # 01:30, 01:45 EST then 03:00 EDT onwards: the gap's wall times add nothing new.
    expected = [z(2026, 3, 8, 6, 30) + timedelta(minutes=15 * i) for i in range(6)]
    assert got == expected
    lh = Recurrence.from_cron("*/15 * * * *", LORD_HOWE, nonexistent=nonexistent)
    got = lh.occurrences_after(z(2026, 10, 3, 15), 4)
    # Lord Howe's gap is 02:00-02:30 (+10:30 -> +11): 02:00 and 02:15 collapse onto 02:30, 02:45.
    assert got == [z(2026, 10, 3, 15, 15) + timedelta(minutes=15 * i) for i in range(4)]


def test_quarter_hour_cron_in_fold_per_policy() -> None:
    after, until = z(2026, 11, 1, 4, 40), z(2026, 11, 1, 7, 10)  # 00:40 EDT .. 02:10 EST
    every_quarter = Recurrence.from_cron("*/15 * * * *", NY, ambiguous=BOTH)
    both = every_quarter.occurrences_between(after, until)
    assert both == [z(2026, 11, 1, 4, 45) + timedelta(minutes=15 * i) for i in range(10)]
    first = Recurrence.from_cron("*/15 * * * *", NY).occurrences_between(after, until)
    assert first == [*both[:5], z(2026, 11, 1, 7)]  # 01:45 EDT then 02:00 EST
    second = Recurrence.from_cron("*/15 * * * *", NY, ambiguous=SECOND)
    assert second.occurrences_between(after, until) == [both[0], *both[5:]]


HOURLY = Recurrence.from_interval(hours(1), start=z(2026, 6, 1))


@pytest.mark.parametrize(
    ("policy", "now", "expected"),
    [
        # 13:00 is 30 s old: due, not missed. 11:00 and 12:00 are missed.
        (MissedPolicy.ONCE, z(2026, 6, 1, 13, 0, 30), [z(2026, 6, 1, 13)]),
        (MissedPolicy.SKIP, z(2026, 6, 1, 13, 0, 30), [z(2026, 6, 1, 13)]),
        (MissedPolicy.ALL, z(2026, 6, 1, 13, 0, 30), [z(2026, 6, 1, h) for h in (11, 12, 13)]),
        # At 13:30 everything is missed.
        (MissedPolicy.ONCE, z(2026, 6, 1, 13, 30), [z(2026, 6, 1, 13)]),
        (MissedPolicy.SKIP, z(2026, 6, 1, 13, 30), []),
        (MissedPolicy.ALL, z(2026, 6, 1, 13, 30), [z(2026, 6, 1, h) for h in (11, 12, 13)]),
        # Exactly grace old still counts as due; a microsecond more is missed.
        (MissedPolicy.SKIP, z(2026, 6, 1, 11, 1), [z(2026, 6, 1, 11)]),
        (MissedPolicy.SKIP, z(2026, 6, 1, 11, 1, 0, 1), []),
        (MissedPolicy.ONCE, z(2026, 6, 1, 10, 59), []),
    ],
)
def test_due_occurrences(policy: MissedPolicy, now: datetime, expected: list[datetime]) -> None:
    assert due_occurrences(HOURLY, z(2026, 6, 1, 10), now, policy) == expected


def test_due_occurrences_caps_and_counts() -> None:
    now = z(2026, 6, 1, 13, 30)
    assert due_occurrences(HOURLY, z(2026, 6, 1, 10), now, MissedPolicy("all"), max_batch=2) == [
        z(2026, 6, 1, 11),
        z(2026, 6, 1, 12),
    ]
    capped = Recurrence.from_interval(hours(1), start=z(2026, 6, 1), max_count=12)
    assert due_occurrences(capped, z(2026, 6, 1, 10), now, MissedPolicy.ALL, fired_count=10) == [
        z(2026, 6, 1, 11),
        z(2026, 6, 1, 12),
    ]
    assert due_occurrences(capped, z(2026, 6, 1, 10), now, MissedPolicy.ONCE, fired_count=12) == []
    # Never fired: history starts at start (inclusive) ...
    assert due_occurrences(HOURLY, None, z(2026, 6, 1, 2, 30), MissedPolicy.ALL) == [
        z(2026, 6, 1, h) for h in (0, 1, 2)
    ]
    # ... or, without a start, only a just-due occurrence fires.
    no_start = Recurrence.from_cron("0 * * * *")
    assert due_occurrences(no_start, None, z(2026, 6, 1, 2, 0, 20), MissedPolicy.ALL) == [
        z(2026, 6, 1, 2)
    ]
    assert due_occurrences(no_start, None, z(2026, 6, 1, 2, 5), MissedPolicy.ALL) == []


def test_missed_once_after_long_outage_finds_latest() -> None:
    rec = Recurrence.from_cron("*/5 * * * *", NY)
    got = due_occurrences(rec, z(2025, 6, 1), z(2026, 6, 1, 12, 3), MissedPolicy.ONCE)
    assert got == [z(2026, 6, 1, 12)]
    weekly = Recurrence.from_cron("0 9 * * 1", NY)  # Monday 1 June 2026 09:00 EDT
    got = due_occurrences(weekly, z(2026, 5, 1), z(2026, 6, 5), MissedPolicy.ONCE)
    assert got == [z(2026, 6, 1, 13)]


def test_occurrence_key() -> None:
    when = z(2026, 3, 8, 7, 30)
    assert occurrence_key("daily", when) == "sched:daily:1772955000"
    same = when.astimezone(ZoneInfo(NY))
    assert occurrence_key("daily", same) == occurrence_key("daily", when)
    assert occurrence_key("daily", when + timedelta(seconds=1)) == "sched:daily:1772955001"
    with pytest.raises(ScheduleError) as exc:
        occurrence_key("daily", datetime(2026, 3, 8, 7, 30))
    assert exc.value.field == "when"


def test_policies_are_str_enums() -> None:
    assert str(NonexistentPolicy.SKIP) == "skip"
    assert f"{AmbiguousPolicy.BOTH}" == "both"
    rec = Recurrence(cron="30 1 * * *", timezone=NY, ambiguous="second")  # type: ignore[arg-type]
    assert rec.ambiguous is SECOND
    assert local_day(rec, date(2026, 11, 1)) == [z(2026, 11, 1, 6, 30)]


NAIVE = datetime(2026, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"cron": "0 9 * * *", "timezone": ""}, "timezone"),
        ({"cron": "61 9 * * *"}, "cron"),
        ({"cron": "0 9 * *"}, "cron"),
        ({"cron": "0 0 9 * * *"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"cron": "0 9 * * *", "every": hours(1)}, "cron"),
        ({}, "cron"),
        ({"every": timedelta(0)}, "every"),
        ({"every": -hours(1)}, "every"),
        ({"every": timedelta(milliseconds=500)}, "every"),
        ({"cron": "0 9 * * *", "start": NAIVE}, "start"),
        ({"cron": "0 9 * * *", "end": NAIVE}, "end"),
        ({"cron": "0 9 * * *", "start": z(2026, 2, 1), "end": z(2026, 1, 1)}, "end"),
        ({"cron": "0 9 * * *", "max_count": 0}, "max_count"),
        ({"cron": "0 9 * * *", "nonexistent": "later"}, "nonexistent"),
        ({"cron": "0 9 * * *", "ambiguous": "fold"}, "ambiguous"),
    ],
)
def test_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ScheduleError) as exc:
        Recurrence(**kwargs)  # type: ignore[arg-type]
    assert exc.value.field == field
    assert str(exc.value) == f"{field}: {exc.value.reason}"
    assert isinstance(exc.value, ValueError)


def test_call_arguments_are_validated() -> None:
    rec = Recurrence.from_cron("0 9 * * *")
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: rec.occurrences_after(NAIVE, 1), "after"),
        (lambda: rec.occurrences_after(z(2026, 1, 1), -1), "limit"),
        (lambda: rec.occurrences_after(z(2026, 1, 1), 1, fired_count=-1), "fired_count"),
        (lambda: rec.occurrences_between(z(2026, 1, 1), NAIVE), "until"),
        (lambda: due_occurrences(rec, None, NAIVE), "now"),
        (lambda: due_occurrences(rec, NAIVE, z(2026, 1, 1)), "last_fired"),
        (lambda: resolve_local_time(datetime(2026, 1, 1, tzinfo=UTC), NY), "local"),
        (lambda: resolve_local_time(NAIVE, "Nowhere/Special"), "zone"),
    ]
    for call, field in cases:
        with pytest.raises(ScheduleError) as exc:
            call()
        assert exc.value.field == field


def test_after_inside_a_transition_still_sees_earlier_wall_times() -> None:
    # 01:45 EDT on fall-back day: 01:30 EST reads earlier on the clock but is 45 min later.
    second = Recurrence.from_cron("30 1 * * *", NY, ambiguous=SECOND)
    assert second.next_after(z(2026, 11, 1, 5, 45)) == z(2026, 11, 1, 6, 30)
    both = Recurrence.from_cron("*/15 * * * *", NY, ambiguous=BOTH)
    assert both.occurrences_after(z(2026, 11, 1, 5, 50), 3) == [
        z(2026, 11, 1, 6),
        z(2026, 11, 1, 6, 15),
        z(2026, 11, 1, 6, 30),
    ]
    # 03:10 EDT on spring-forward day: the 02:30 run (shifted to 03:30 EDT) is still ahead.
    gap = Recurrence.from_cron("30 2 * * *", NY)
    assert gap.next_after(z(2026, 3, 8, 7, 10)) == z(2026, 3, 8, 7, 30)
