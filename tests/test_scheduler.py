"""Recurring schedules and local-time sends against a real server.

Every test drives time through the injectable clock and ``tick(now=...)``, so none sleeps
through a delay; the DST arithmetic itself is covered in test_recurrence.py. Dates are in
the past of the real clock, so fired occurrences land straight in the lanes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

import pytest

from conftest import Recorder
from tidings import EventKind, Message, Queue, Tidings, ValidationError
from tidings.scheduling import schedules as scheduler_module
from tidings.scheduling.recurrence import ScheduleError
from tidings.scheduling.schedule import build_schedule
from tidings.scheduling.schedules import (
    Schedule,
    ScheduleExistsError,
    ScheduleNotFoundError,
    Schedules,
    local_instant,
    publish_local,
)

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # a Monday, in the past of the real clock
HOUR = timedelta(hours=1)


@pytest.fixture
def make_app(make_app: Callable[..., Tidings]) -> Callable[..., Tidings]:
    """The shared app factory, with the queues these tests target declared on every app."""
    def factory(**kwargs: Any) -> Tidings:
        app = make_app(**kwargs)
        for name in ("email", "sms"):
            app.queue(name)
        return app

    return factory


class Clock:
    """A settable clock for Schedules.clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(app: Tidings) -> Clock:
    c = Clock(T0)
    app.schedules.clock = c
    return c


async def messages(queue: Queue) -> list[Message]:
    """Every message waiting in the queue's lanes and delayed set, oldest first."""
    client = queue.app.broker.client
    out: list[Message] = []
    for lane_key in queue.keys[:3]:
        for _, fields in await client.xrange(lane_key):
            out.append(queue.decode(fields[b"m"]))
    for raw in (await client.hgetall(queue.keys[4])).values():
        out.append(queue.decode(raw.split(b"|", 2)[2]))
    return sorted(out, key=lambda m: m.id)


def occurrences(found: list[Message]) -> list[str]:
    return [m.headers["occurrence"] for m in found]


# -- definition and listing -------------------------------------------------------------


async def test_add_get_list_show_next_fire_times(app: Tidings, clock: Clock) -> None:
    hourly = await app.schedules.add("hourly", queue="email", cron="0 * * * *",
                                     payload={"kind": "digest"})
    assert hourly.next_fire == T0 + HOUR and hourly.state == "active"
    tokyo = await app.schedules.add("tokyo", queue="email", cron="0 9 * * *",
                                    timezone="Asia/Tokyo")
    assert tokyo.next_fire == datetime(2026, 6, 2, 0, 0, tzinfo=UTC)  # 09:00 JST
    every = await app.schedules.add("every", queue="sms", every=90, start=T0 + HOUR)
    assert every.next_fire == T0 + HOUR  # start itself is the first occurrence
    paused = await app.schedules.add("paused", queue="sms", every=60, paused=True)
    assert paused.next_fire is None and paused.state == "paused"
    listed = await app.schedules.list()
    assert [(s.id, s.next_fire) for s in listed] == [
        ("every", T0 + HOUR), ("hourly", T0 + HOUR),
        ("tokyo", datetime(2026, 6, 2, tzinfo=UTC)), ("paused", None)]
    got = await app.schedules.get("hourly")
    assert got.payload == {"kind": "digest"} and got.cron == "0 * * * *"
    assert got.version == 1 and got.created_at == T0 and got.fired_count == 0
    assert got.as_dict()["next_fire"] == (T0 + HOUR).isoformat()
    with pytest.raises(ScheduleNotFoundError):
        await app.schedules.get("nope")


async def test_add_refuses_a_taken_id_unless_replace(app: Tidings, clock: Clock) -> None:
    first = await app.schedules.add("s", queue="email", cron="0 * * * *")
    with pytest.raises(ScheduleExistsError) as exc:
        await app.schedules.add("s", queue="email", cron="0 * * * *")
    assert exc.value.field == "schedule_id" and isinstance(exc.value, ValidationError)
    same = await app.schedules.add("s", queue="email", cron="0 * * * *", replace=True)
    assert same.version == first.version  # re-declared unchanged: no write at all
    changed = await app.schedules.add("s", queue="email", cron="30 * * * *", replace=True)
    assert changed.version == first.version + 1 and changed.next_fire == T0 + HOUR / 2
    # A redeploy redefining it keeps the pause an operator set.
    await app.schedules.pause("s")
    again = await app.schedules.add("s", queue="email", cron="15 * * * *", replace=True)
    assert again.paused and again.cron == "15 * * * *" and again.next_fire is None
    # Resuming a schedule that runs is a no-op (it must not skip a due occurrence).
    resumed = await app.schedules.resume("s")
    assert (await app.schedules.resume("s")).version == resumed.version


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"queue": "email"}, "cron"),  # neither cron nor every
        ({"queue": "email", "cron": "0 9 * * *", "every": 60}, "cron"),
        ({"queue": "email", "cron": "61 * * * *"}, "cron"),
        ({"queue": "email", "every": 0.5}, "every"),
        ({"queue": "email", "every": "1h"}, "every"),
        ({"queue": "bad name", "every": 60}, "queue"),
        ({"queue": "email", "every": 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"queue": "email", "every": 60, "start": datetime(2026, 1, 1)}, "start"),
        ({"queue": "email", "every": 60, "max_count": 0}, "max_count"),
        ({"queue": "email", "every": 60, "missed": "sometimes"}, "missed"),
        ({"queue": "email", "every": 60, "payload": {1, 2}}, "payload"),
        ({"queue": "email", "every": 60, "headers": {"a": 1}}, "headers"),
        ({"queue": "email", "every": 60, "priority": "urgent"}, "priority"),
        ({"queue": "email", "every": 60, "grace": -1}, "grace"),
    ],
)
async def test_invalid_definitions_name_the_field(app: Tidings, kwargs: dict[str, Any],
                                                  field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        await app.schedules.add("s", **kwargs)
    assert exc.value.field == field


async def test_bad_id_is_rejected(app: Tidings) -> None:
    with pytest.raises(ScheduleError) as exc:
        await app.schedules.add("has space", queue="email", every=60)
    assert exc.value.field == "schedule_id"


# -- firing ------------------------------------------------------------------------------


async def test_tick_fires_each_due_occurrence_once_with_rendered_payload(
        app: Tidings, clock: Clock) -> None:
    await app.schedules.add(
        "digest", queue="email", cron="0 * * * *", timezone="Europe/Paris",
        payload={"text": "run {occurrence} ({occurrence_local}) of {schedule_id}",
                 "ts": "{occurrence_ts}", "keep": "{unknown} {", "n": [1, "{schedule_id}"]},
        headers={"team": "growth"}, priority="high")
    assert await app.schedules.tick(T0 + HOUR / 2) == []  # not due yet
    [fired] = await app.schedules.tick(T0 + HOUR)
    assert fired.schedule_id == "digest" and fired.occurrence == T0 + HOUR
    assert await app.schedules.tick(T0 + HOUR + timedelta(seconds=5)) == []
    [msg] = await messages(app.queue("email"))
    assert msg.id == fired.message_id
    assert msg.payload == {
        "text": "run 2026-06-01T09:00:00+00:00 (2026-06-01T11:00:00+02:00) of digest",
        "ts": str(int((T0 + HOUR).timestamp())), "keep": "{unknown} {", "n": [1, "digest"]}
    assert msg.headers == {"team": "growth", "schedule_id": "digest",
                           "occurrence": "2026-06-01T09:00:00+00:00"}
    assert msg.priority.label == "high"
    assert msg.idempotency_key == f"sched:digest:{int((T0 + HOUR).timestamp())}"
    after = await app.schedules.get("digest")
    assert after.fired_count == 1 and after.last_fired == T0 + HOUR
    assert after.next_fire == T0 + 2 * HOUR


async def test_three_tickers_racing_fire_exactly_one_message_per_occurrence(
        make_app: Callable[..., Tidings]) -> None:
    apps = [make_app() for _ in range(3)]
    for a in apps:
        a.schedules.clock = Clock(T0)
    await apps[0].schedules.add("race", queue="email", every=60, start=T0)
    for step in range(5):  # five occurrences, each raced by all three tickers
        now = T0 + timedelta(minutes=step, seconds=1)
        results = await asyncio.gather(*(a.schedules.tick(now) for a in apps))
        assert sum(len(r) for r in results) == 1, results
    found = await messages(apps[0].queue("email"))
    assert len(found) == 5
    assert occurrences(found) == [(T0 + timedelta(minutes=i)).isoformat() for i in range(5)]
    assert (await apps[1].schedules.get("race")).fired_count == 5


async def test_ticker_that_stalls_past_its_lease_cannot_duplicate_an_occurrence(
        make_app: Callable[..., Tidings], monkeypatch: pytest.MonkeyPatch) -> None:
    stalled, rescuer = make_app(), make_app()
    stalled.schedules.clock = rescuer.schedules.clock = Clock(T0)
    await stalled.schedules.add("s", queue="email", every=3600, start=T0)
    real_commit = scheduler_module._SCRIPTS.commit

    async def crash(*args: Any) -> Any:
        raise RuntimeError("the ticker's process died between publish and commit")

    monkeypatch.setattr(scheduler_module._SCRIPTS, "commit", crash)
    with pytest.raises(RuntimeError):
        await stalled.schedules.tick(T0 + timedelta(seconds=1))
    monkeypatch.setattr(scheduler_module._SCRIPTS, "commit", real_commit)
    # Within the lease nobody else may fire it ...
    assert await rescuer.schedules.tick(T0 + timedelta(seconds=20)) == []
    # ... after it, another ticker takes over and publishes the same occurrence again,
    # which its idempotency key collapses into the message already there.
    [again] = await rescuer.schedules.tick(T0 + timedelta(seconds=40))
    [msg] = await messages(rescuer.queue("email"))
    assert again.message_id == msg.id and again.occurrence == T0
    state = await rescuer.schedules.get("s")
    assert state.fired_count == 1 and state.next_fire == T0 + HOUR


async def test_a_start_long_past_fires_no_backlog(app: Tidings, clock: Clock) -> None:
    clock.now = T0 + 48 * HOUR
    created = await app.schedules.add("s", queue="email", every=3600, start=T0, missed="all")
    assert created.next_fire == T0 + 49 * HOUR  # anchored at start, but after creation
    assert await app.schedules.tick(T0 + 48 * HOUR + timedelta(seconds=1)) == []
    assert await messages(app.queue("email")) == []
    [fired] = await app.schedules.tick(T0 + 49 * HOUR)
    assert fired.occurrence == T0 + 49 * HOUR


async def test_a_start_just_past_fires_at_once(app: Tidings, clock: Clock) -> None:
    clock.now = T0 + timedelta(seconds=2)  # start=now, read a moment before add() ran
    created = await app.schedules.add("s", queue="email", every=3600, start=T0)
    assert created.next_fire == T0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("once", [T0 + 5 * HOUR]),  # the outage collapses into its latest occurrence
        ("all", [T0 + h * HOUR for h in (2, 3, 4, 5)]),
        ("skip", []),
    ],
)
async def test_missed_policies_after_an_outage(app: Tidings, clock: Clock, policy: str,
                                               expected: list[datetime]) -> None:
    await app.schedules.add("hourly", queue="email", cron="0 * * * *", missed=policy)
    assert len(await app.schedules.tick(T0 + HOUR)) == 1  # on time
    # Every worker was down from 09:00:30 to 13:30.
    fired = await app.schedules.tick(T0 + 5 * HOUR + timedelta(minutes=30))
    assert [f.occurrence for f in fired] == expected
    state = await app.schedules.get("hourly")
    assert state.next_fire == T0 + 6 * HOUR and state.fired_count == 1 + len(expected)
    # Back to normal: the next occurrence fires on time, whatever the policy.
    [nxt] = await app.schedules.tick(T0 + 6 * HOUR)
    assert nxt.occurrence == T0 + 6 * HOUR
    assert len(await messages(app.queue("email"))) == 2 + len(expected)


async def test_missed_all_catches_up_in_bounded_batches(app: Tidings, clock: Clock) -> None:
    app.schedules.max_catch_up = 10
    await app.schedules.add("m", queue="email", every=60, missed="all")
    fired = await app.schedules.tick(T0 + timedelta(minutes=25, seconds=1))
    assert len(fired) == 25  # 10 + 10 + 5, the schedule stays due until caught up
    assert [f.occurrence for f in fired] == [T0 + timedelta(minutes=i) for i in range(1, 26)]
    assert (await app.schedules.get("m")).next_fire == T0 + timedelta(minutes=26)


async def test_pause_and_resume_take_effect_on_the_next_tick(app: Tidings, clock: Clock) -> None:
    await app.schedules.add("s", queue="email", cron="0 * * * *")
    paused = await app.schedules.pause("s")
    assert paused.paused and paused.next_fire is None
    assert await app.schedules.tick(T0 + 3 * HOUR) == []
    clock.now = T0 + 3 * HOUR + timedelta(minutes=10)
    resumed = await app.schedules.resume("s")
    # Occurrences while paused are not fired; the next one after the resume is.
    assert resumed.next_fire == T0 + 4 * HOUR and not resumed.paused
    assert await app.schedules.tick(T0 + 3 * HOUR + timedelta(minutes=20)) == []
    [fired] = await app.schedules.tick(T0 + 4 * HOUR)
    assert fired.occurrence == T0 + 4 * HOUR
    assert len(await messages(app.queue("email"))) == 1


async def test_update_applies_from_the_next_occurrence(app: Tidings, clock: Clock) -> None:
    await app.schedules.add("s", queue="email", cron="0 * * * *", payload={"v": 1})
    assert len(await app.schedules.tick(T0 + HOUR)) == 1
    clock.now = T0 + HOUR + timedelta(minutes=5)
    updated = await app.schedules.update("s", every=timedelta(minutes=15), start=T0,
                                         payload={"v": 2}, queue="sms")
    assert updated.cron is None and updated.every == timedelta(minutes=15)
    assert updated.next_fire == T0 + HOUR + timedelta(minutes=15)
    assert updated.fired_count == 1 and updated.version == 2
    [fired] = await app.schedules.tick(T0 + HOUR + timedelta(minutes=15))
    [msg] = await messages(app.queue("sms"))
    assert msg.id == fired.message_id and msg.payload == {"v": 2}
    with pytest.raises(ScheduleError) as exc:
        await app.schedules.update("s", id="other")
    assert exc.value.field == "id"
    with pytest.raises(ScheduleError) as exc:
        await app.schedules.update("s", timezone="Nowhere/City")
    assert exc.value.field == "timezone"
    with pytest.raises(ScheduleNotFoundError):
        await app.schedules.update("missing", payload=1)


async def test_update_while_a_tick_holds_the_claim(app: Tidings, clock: Clock,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An update between a tick's claim and its commit wins: the tick only records history."""
    await app.schedules.add("s", queue="email", cron="0 * * * *")
    real_fire = Schedules._fire

    async def fire_after_update(self: Schedules, *args: Any) -> Any:
        clock.now = T0 + HOUR + timedelta(seconds=1)
        await app.schedules.update("s", cron="30 * * * *")
        return await real_fire(self, *args)

    monkeypatch.setattr(Schedules, "_fire", fire_after_update)
    [fired] = await app.schedules.tick(T0 + HOUR)
    monkeypatch.setattr(Schedules, "_fire", real_fire)
    assert fired.occurrence == T0 + HOUR  # claimed under the old definition: it fires
    state = await app.schedules.get("s")
    assert state.cron == "30 * * * *" and state.fired_count == 1
    assert state.next_fire == T0 + HOUR + timedelta(minutes=30)  # the update's, not the tick's
    [nxt] = await app.schedules.tick(T0 + HOUR + timedelta(minutes=30))
    assert nxt.occurrence == T0 + HOUR + timedelta(minutes=30)


async def test_delete_takes_effect_on_the_next_tick(app: Tidings, clock: Clock) -> None:
    await app.schedules.add("s", queue="email", every=60)
    assert await app.schedules.delete("s") is True
    assert await app.schedules.delete("s") is False
    assert await app.schedules.tick(T0 + HOUR) == []
    assert await app.schedules.list() == []
    assert await app.broker.client.zcard(app.schedules._due_key) == 0


async def test_end_and_max_count_finish_a_schedule(app: Tidings, clock: Clock) -> None:
    await app.schedules.add("capped", queue="email", every=60, max_count=3)
    await app.schedules.add("ended", queue="email", every=60, end=T0 + timedelta(minutes=2))
    fired = await app.schedules.tick(T0 + timedelta(minutes=10, seconds=30))
    # missed=once: minute 10 is due for "capped"; "ended" fires its last one (minute 2).
    assert sorted(f.schedule_id for f in fired) == ["capped", "ended"]
    for minute in range(11, 15):
        await app.schedules.tick(T0 + timedelta(minutes=minute))
    capped, ended = await app.schedules.get("capped"), await app.schedules.get("ended")
    assert capped.fired_count == 3 and capped.state == "finished"
    assert ended.fired_count == 1 and ended.state == "finished"
    assert len(await messages(app.queue("email"))) == 4


async def test_lookahead_hands_occurrences_to_the_delayed_set_ahead_of_time(
        app: Tidings, clock: Clock) -> None:
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    clock.now = future - HOUR
    await app.schedules.add("s", queue="email", every=3600, start=future)
    [fired] = await app.schedules.tick(future - timedelta(seconds=1), lookahead=2)
    info = await app.queue("email").inspect(fired.message_id)
    assert info is not None and info.state == "delayed" and info.due_at == future


async def test_the_worker_runs_the_ticker_and_delivers_on_time(
        app: Tidings, recorder: Recorder) -> None:
    """Real time, end to end: every worker ticks; occurrences arrive at their instant."""
    app.schedules.interval = 0.2
    app.schedules.lookahead = 0.5
    q = app.queue("beat")
    got: list[tuple[float, Message]] = []

    @q.handler
    async def handle(msg: Message) -> None:
        got.append((time.time(), msg))

    await app.schedules.add("beat", queue="beat", every=1)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2, timeout=10)
    for received, msg in got[:2]:
        due = datetime.fromisoformat(msg.headers["occurrence"]).timestamp()
        assert received >= due - 0.005  # promoted by the server clock, not early
        assert received - due < 1.0  # generous bound for a loaded CI machine
    assert len({m.headers["occurrence"] for _, m in got}) == len(got)


# -- one-off local-time sends ------------------------------------------------------------


async def test_publish_local_lands_in_the_delayed_set_at_the_right_instant(app: Tidings) -> None:
    q = app.queue("email")
    year = datetime.now(UTC).year + 1
    msg_id = await publish_local(q, {"to": "a@b.c"}, at=datetime(year, 12, 1, 9, 0),
                                 zone="Asia/Tokyo", priority="high")
    info = await q.inspect(msg_id)
    assert info is not None and info.state == "delayed"
    assert info.due_at == datetime(year, 12, 1, 0, 0, tzinfo=UTC)
    # A (date, time) pair; New York's spring-forward gap moves 02:30 to 03:30 EDT.
    gap_day = date(year, 3, 8) + timedelta(days=(6 - date(year, 3, 8).weekday()) % 7)
    msg_id = await publish_local(q, "x", at=(gap_day, clock_time(2, 30)),
                                 zone="America/New_York")
    info = await q.inspect(msg_id)
    assert info is not None and info.due_at == datetime.combine(
        gap_day, clock_time(7, 30), tzinfo=UTC)


async def test_publish_local_in_the_past_is_delivered_at_once(app: Tidings) -> None:
    q = app.queue("email")
    msg_id = await publish_local(q, "late", at=datetime(2020, 1, 1, 9), zone="Europe/Berlin")
    info = await q.inspect(msg_id)
    assert info is not None and info.state == "queued"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"at": datetime(2026, 12, 1, 9, tzinfo=UTC), "zone": "Asia/Tokyo"}, "at"),
        ({"at": "2026-12-01 09:00", "zone": "Asia/Tokyo"}, "at"),
        ({"at": datetime(2026, 12, 1, 9), "zone": "Asia/Nowhere"}, "zone"),
        ({"at": datetime(2026, 12, 1, 9), "zone": ""}, "zone"),
        # 02:30 on 2026-03-08 does not exist in New York; "skip" refuses it.
        ({"at": datetime(2026, 3, 8, 2, 30), "zone": "America/New_York",
          "nonexistent": "skip"}, "at"),
        ({"at": datetime(2026, 11, 1, 1, 30), "zone": "America/New_York",
          "ambiguous": "both"}, "ambiguous"),
        ({"at": datetime(2026, 12, 1, 9), "zone": "UTC", "nonexistent": "later"},
         "nonexistent"),
    ],
)
async def test_publish_local_validation_names_the_field(app: Tidings, kwargs: dict[str, Any],
                                                        field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        await publish_local(app.queue("email"), "x", **kwargs)
    assert exc.value.field == field


def test_local_instant_fall_back_policies() -> None:
    # 01:30 happens twice in New York on 2026-11-01: EDT (05:30Z) then EST (06:30Z).
    first = local_instant(datetime(2026, 11, 1, 1, 30), "America/New_York")
    second = local_instant(datetime(2026, 11, 1, 1, 30), "America/New_York",
                           ambiguous="second")
    assert (first, second) == (datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
                               datetime(2026, 11, 1, 6, 30, tzinfo=UTC))


# -- the delayed set, in real time -------------------------------------------------------


async def test_delayed_messages_are_promoted_on_time_by_a_running_worker(
        app: Tidings, recorder: Recorder) -> None:
    """The core promotion path: not before due, and late by little (generous CI bound)."""
    q = app.queue("timed")
    received: dict[str, float] = {}

    @q.handler
    async def handle(msg: Message) -> None:
        received[msg.id] = time.time()

    async with app.worker():
        base = time.time()
        due = {await q.publish(i, send_at=datetime.fromtimestamp(base + 0.2 + i * 0.05, UTC)):
               base + 0.2 + i * 0.05 for i in range(5)}
        await recorder.wait_count(EventKind.ACKED, 5, timeout=10)
    for msg_id, at in due.items():
        assert received[msg_id] >= at - 0.002  # millisecond truncation of the due time
        assert received[msg_id] - at < 0.5


def test_schedule_round_trips_through_its_stored_form() -> None:
    s = build_schedule("x", "email", cron="0 9 * * *", timezone="Asia/Tokyo", start=T0,
                       end=T0 + 10 * HOUR, max_count=5, payload=[1, "a"], headers={"h": "v"},
                       ambiguous="both", missed="all", grace=5)
    raw = {b"id": b"x", b"def": s._definition_json(), b"version": b"3", b"paused": b"0",
           b"next_fire": b"", b"fired_count": b"2"}
    back = Schedule._from_hash(raw)
    assert back._definition_json() == s._definition_json()
    assert back.version == 3 and back.fired_count == 2 and back.state == "finished"
