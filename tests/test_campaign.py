"""Bulk campaigns against a real server: local times, resume, cancel races, throttle, counts."""

from __future__ import annotations

import asyncio
import time as wall
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from conftest import Recorder
from tidings import EventKind, Message, Queue, Retry, Tidings, ValidationError
from tidings.queues import scripts
from tidings.scheduling import campaign_progress
from tidings.scheduling import campaigns as campaign_module
from tidings.scheduling.campaigns import (
    CampaignConflictError,
    CampaignNotFoundError,
    Campaigns,
    Recipient,
)
from tidings.scheduling.recurrence import ScheduleError

NEXT_YEAR = datetime.now(UTC).year + 1
DAY = date(NEXT_YEAR, 1, 12)  # a January Monday: no DST anywhere near
ZONES = ["Asia/Tokyo", "America/New_York", None, "Europe/Berlin", "Australia/Sydney"]
# 09:00 on DAY in each zone, in UTC (None = the default zone, UTC).
NINE = {
    "Asia/Tokyo": datetime(NEXT_YEAR, 1, 12, 0, 0, tzinfo=UTC),
    "America/New_York": datetime(NEXT_YEAR, 1, 12, 14, 0, tzinfo=UTC),
    None: datetime(NEXT_YEAR, 1, 12, 9, 0, tzinfo=UTC),
    "Europe/Berlin": datetime(NEXT_YEAR, 1, 12, 8, 0, tzinfo=UTC),
    "Australia/Sydney": datetime(NEXT_YEAR, 1, 11, 22, 0, tzinfo=UTC),  # AEDT, UTC+11
}


@pytest.fixture
def make_app(make_app: Callable[..., Tidings]) -> Callable[..., Tidings]:
    """The shared app factory, with the queues these tests target declared on every app."""
    def factory(**kwargs: Any) -> Tidings:
        app = make_app(**kwargs)
        for name in ("push",):
            app.queue(name)
        return app

    return factory


def people(n: int, start: int = 0) -> list[Recipient]:
    return [Recipient(f"u{i}", {"user": i}, ZONES[i % len(ZONES)]) for i in range(start, n)]


def crash_after(recipients: list[Recipient], k: int) -> Iterator[Recipient]:
    """Yield k recipients, then fail the way a producer's data source would."""
    for i, r in enumerate(recipients):
        if i == k:
            raise RuntimeError("producer crashed")
        yield r


async def delayed(queue: Queue) -> dict[str, tuple[int, Message]]:
    """Every message in the delayed set: id -> (due ms, message)."""
    client = queue.app.broker.client
    scores = dict(await client.zrange(queue.keys.delayed, 0, -1, withscores=True))
    out = {}
    for msg_id, body in (await client.hgetall(queue.keys.delayed_bodies)).items():
        out[msg_id.decode()] = (int(scores[msg_id]), queue.decode(body.split(b"|", 2)[2]))
    return out


@pytest.fixture
def campaigns(app: Tidings) -> Campaigns:
    return Campaigns.of(app)


async def test_each_recipient_is_due_at_nine_in_their_own_zone(
        app: Tidings, campaigns: Campaigns) -> None:
    progress = await campaigns.schedule("welcome", "push", people(2500), local_time=time(9),
                                        date=DAY, chunk_size=300, headers={"kind": "promo"},
                                        priority="low")
    assert (progress.status, progress.scheduled, progress.pending, progress.cursor) == (
        "scheduled", 2500, 2500, 2500)
    assert (progress.released, progress.cancelled, progress.duplicates) == (0, 0, 0)
    found = await delayed(app.queue("push"))
    assert len(found) == 2500
    for msg_id, (due, msg) in found.items():
        i = msg.payload["user"]
        assert due == int(NINE[ZONES[i % len(ZONES)]].timestamp() * 1000)
        assert msg.id == msg_id and msg.priority.label == "low"
        assert msg.headers == {"kind": "promo", "campaign_id": "welcome", "recipient_id": f"u{i}"}
        assert msg.idempotency_key == f"campaign:welcome:u{i}"
    stats = await app.queue("push").stats()
    assert stats.delayed == 2500 and stats.counters["published"] == 2500


async def test_without_a_date_each_gets_the_next_nine_oclock(
        app: Tidings, campaigns: Campaigns) -> None:
    # Created at 12:00 UTC: 09:00 has passed in Berlin (13:00 there) but not in New York
    # (07:00 there).
    campaigns.clock = lambda: datetime(NEXT_YEAR, 1, 12, 12, 0, tzinfo=UTC)
    recipients = [Recipient("ny", 1, "America/New_York"), Recipient("be", 2, "Europe/Berlin")]
    await campaigns.schedule("next", "push", recipients, local_time=time(9))
    dues = {m.headers["recipient_id"]: due for due, m in
            (await delayed(app.queue("push"))).values()}
    assert dues == {"ny": int(datetime(NEXT_YEAR, 1, 12, 14, tzinfo=UTC).timestamp() * 1000),
                    "be": int(datetime(NEXT_YEAR, 1, 13, 8, tzinfo=UTC).timestamp() * 1000)}


async def test_dst_policies_apply_per_recipient(app: Tidings, campaigns: Campaigns) -> None:
    gap_day = date(NEXT_YEAR, 3, 8) + timedelta(days=(6 - date(NEXT_YEAR, 3, 8).weekday()) % 7)
    recipients = [Recipient("ny", 1, "America/New_York"), Recipient("utc", 2, "UTC")]
    progress = await campaigns.schedule("gap", "push", recipients, local_time=time(2, 30),
                                        date=gap_day, nonexistent="skip")
    assert (progress.scheduled, progress.skipped) == (1, 1)  # 02:30 never happens in NY
    progress = await campaigns.schedule("gap2", "push", recipients, local_time=time(2, 30),
                                        date=gap_day)  # next_valid: 03:30 EDT = 07:30Z
    dues = sorted(d for d, m in (await delayed(app.queue("push"))).values()
                  if m.headers["campaign_id"] == "gap2")
    assert dues == [int(datetime.combine(gap_day, time(2, 30), UTC).timestamp() * 1000),
                    int(datetime.combine(gap_day, time(7, 30), UTC).timestamp() * 1000)]


async def test_a_past_time_is_sent_at_once_or_skipped(app: Tidings,
                                                      campaigns: Campaigns) -> None:
    past = date(2020, 1, 6)
    sent = await campaigns.schedule("late", "push", people(50), local_time=time(9), date=past)
    assert (sent.scheduled, sent.released, sent.pending) == (50, 50, 0)
    assert (await app.queue("push").stats()).depth == 50
    skipped = await campaigns.schedule("late2", "push", people(50), local_time=time(9),
                                       date=past, if_past="skip")
    assert (skipped.scheduled, skipped.skipped, skipped.status) == (0, 50, "scheduled")


async def test_one_instant_for_everyone(app: Tidings, campaigns: Campaigns) -> None:
    at = datetime(NEXT_YEAR, 2, 1, 17, 30, tzinfo=UTC)
    await campaigns.schedule("flash", "push", people(100), at=at, expires_in=3600)
    found = (await delayed(app.queue("push"))).values()
    due = int(at.timestamp() * 1000)
    assert {d for d, _ in found} == {due}
    # The time to live counts from the due time, in the envelope and in the delayed body.
    assert {m.expires_at_ms for _, m in found} == {due + 3_600_000}
    bodies = await app.broker.client.hvals(app.queue("push").keys.delayed_bodies)
    assert {b.split(b"|", 2)[1] for b in bodies} == {str(due + 3_600_000).encode()}


# -- resuming ----------------------------------------------------------------------------


async def test_a_crashed_run_resumes_without_duplicates(app: Tidings,
                                                        campaigns: Campaigns) -> None:
    everyone = people(3000)
    with pytest.raises(RuntimeError, match="producer crashed"):
        await campaigns.schedule("resume", "push", crash_after(everyone, 1750),
                                 local_time=time(9), date=DAY, chunk_size=250)
    half = await campaigns.progress("resume")
    # Whole chunks only (chunks built but not sent yet when the source failed are lost,
    # as they would be in a crashed process).
    assert half.status == "scheduling" and half.cursor % 250 == 0
    assert 0 < half.cursor <= 1750 and half.scheduled == half.pending == half.cursor
    assert len(await delayed(app.queue("push"))) == half.cursor
    done = await campaigns.schedule("resume", "push", everyone, local_time=time(9), date=DAY,
                                    chunk_size=400)  # a different chunk size is fine
    assert (done.status, done.cursor, done.scheduled, done.duplicates) == (
        "scheduled", 3000, 3000, 0)
    found = await delayed(app.queue("push"))
    assert len(found) == 3000
    assert sorted(m.headers["recipient_id"] for _, m in found.values()) == sorted(
        r.id for r in everyone)
    # Running it again once complete changes nothing.
    again = await campaigns.schedule("resume", "push", everyone, local_time=time(9), date=DAY)
    assert again.scheduled == 3000 and len(await delayed(app.queue("push"))) == 3000


async def test_resume_checks_the_recipients_and_the_arguments(
        app: Tidings, campaigns: Campaigns) -> None:
    everyone = people(1000)
    with pytest.raises(RuntimeError):
        await campaigns.schedule("c", "push", crash_after(everyone, 500), local_time=time(9),
                                 date=DAY, chunk_size=100)
    with pytest.raises(ValidationError) as exc:
        await campaigns.schedule("c", "push", list(reversed(everyone)), local_time=time(9),
                                 date=DAY)
    assert exc.value.field == "recipients"
    with pytest.raises(ValidationError) as exc:
        await campaigns.schedule("c", "push", everyone, local_time=time(10), date=DAY)
    assert exc.value.field == "campaign_id"
    app.queue("email")
    with pytest.raises(ValidationError) as exc:
        await campaigns.schedule("c", "email", everyone, local_time=time(9), date=DAY)
    assert exc.value.field == "campaign_id"


async def test_idempotency_keys_catch_duplicates_the_cursor_cannot(
        app: Tidings, campaigns: Campaigns) -> None:
    twice = [*people(10), Recipient("u3", {"user": 3}, None)]  # u3 listed twice
    progress = await campaigns.schedule("dup", "push", twice, local_time=time(9), date=DAY)
    assert (progress.scheduled, progress.duplicates) == (10, 1)


async def test_two_runs_of_one_campaign_at_once_publish_each_recipient_once(
        make_app: Callable[..., Tidings]) -> None:
    a, b = Campaigns.of(make_app()), Campaigns.of(make_app())
    everyone = people(6000)
    results = await asyncio.gather(
        a.schedule("both", "push", everyone, local_time=time(9), date=DAY, chunk_size=200),
        b.schedule("both", "push", everyone, local_time=time(9), date=DAY, chunk_size=200),
        return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, CampaignConflictError) for e in errors), errors
    final = await a.progress("both")
    if final.status == "scheduling":  # the winner may have been the one that stopped
        final = await a.schedule("both", "push", everyone, local_time=time(9), date=DAY)
    assert (final.status, final.scheduled) == ("scheduled", 6000)
    assert final.duplicates == 0
    assert (await a.app.queue("push").stats()).delayed == 6000


# -- cancelling --------------------------------------------------------------------------


async def test_cancel_removes_every_waiting_message(app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await q.publish("not part of it", delay=3600)
    await campaigns.schedule("stop", "push", people(2000), local_time=time(9), date=DAY)
    progress = await campaigns.cancel("stop")
    assert (progress.status, progress.cancelled, progress.released, progress.pending) == (
        "cancelled", 2000, 0, 0)
    assert progress.done and progress.cancelled_at is not None
    stats = await q.stats()
    assert stats.delayed == 1 and stats.counters["cancelled"] == 2000
    assert await app.broker.client.hlen(q.keys.index) == 1  # index entries gone with them
    # Cancelled is final: scheduling again publishes nothing; cancelling again is harmless.
    again = await campaigns.schedule("stop", "push", people(2000), local_time=time(9),
                                     date=DAY)
    assert again.status == "cancelled" and (await q.stats()).delayed == 1
    assert (await campaigns.cancel("stop")).cancelled == 2000
    with pytest.raises(CampaignNotFoundError):
        await campaigns.cancel("never")


async def test_cancel_stops_a_run_in_progress(app: Tidings, campaigns: Campaigns) -> None:
    cancels: list[asyncio.Task[Any]] = []

    def source() -> Iterator[Recipient]:
        for i, r in enumerate(people(5000)):
            if i == 2000:
                # The operator cancels from elsewhere while the producer is mid-way.
                cancels.append(asyncio.get_running_loop().create_task(campaigns.cancel("mid")))
            yield r

    await campaigns.schedule("mid", "push", source(), local_time=time(9), date=DAY,
                             chunk_size=100)
    await cancels[0]
    progress = await campaigns.progress("mid")
    assert progress.status == "cancelled"
    assert progress.scheduled < 5000
    assert progress.cancelled == progress.scheduled and progress.pending == 0
    assert (await app.queue("push").stats()).delayed == 0


async def test_cancel_interleaved_with_promotion_counts_each_message_once(
        app: Tidings, campaigns: Campaigns, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic race: the fetch script promotes between every cancel batch."""
    q = app.queue("push")
    # Scheduled well ahead (a slow machine must not publish them already due), then made
    # due by hand: every waiting message's due time (and the campaign's record of it) set
    # to the epoch.
    await campaigns.schedule("race", q, people(3000), at=datetime.now(UTC) + timedelta(hours=1))
    client = app.broker.client
    waiting = dict.fromkeys(await client.zrange(q.keys.delayed, 0, -1), 0)
    assert len(waiting) == 3000
    await client.zadd(q.keys.delayed, waiting, xx=True)
    await client.zadd(q.keys.campaign("race").pending, waiting, xx=True)
    monkeypatch.setattr(campaign_progress, "SWEEP_BATCH", 250)
    real_call = app.broker.call
    promoted: list[int] = []

    async def promote_then_call(script: Any, keys: Any, args: Any) -> Any:
        if script is campaign_module._CANCEL and len(promoted) < 3:
            # What a worker's fetch does: promote up to 400 due messages (capacity 0).
            before = await app.broker.client.zcard(q.keys.delayed)
            await scripts.fetch(app.broker.client, q.keys, consumer="x", quotas=(0, 0, 0),
                                capacity=0, promote_limit=400, on_expire="dead_letter")
            promoted.append(before - await app.broker.client.zcard(q.keys.delayed))
        return await real_call(script, keys, args)

    monkeypatch.setattr(app.broker, "call", promote_then_call)
    progress = await campaigns.cancel("race")
    assert promoted == [400, 400, 400]
    assert progress.released == 1200 and progress.cancelled == 1800
    assert progress.scheduled == progress.released + progress.cancelled + progress.pending
    stats = await q.stats()
    assert stats.delayed == 0 and stats.depth == 1200  # the released ones are in the lane


async def test_cancel_while_a_worker_releases(app: Tidings, recorder: Recorder,
                                              campaigns: Campaigns,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Real time: a worker drains while cancel runs; every message ends exactly one way."""
    monkeypatch.setattr(campaign_progress, "SWEEP_BATCH", 100)
    q = app.queue("push")
    handled: list[str] = []

    @q.handler(concurrency=50)
    async def handle(msg: Message) -> None:
        handled.append(msg.headers["recipient_id"])
        await asyncio.sleep(0.001)

    n = 4000
    at = datetime.now(UTC) + timedelta(milliseconds=400)
    await campaigns.schedule("live", q, people(n), at=at)
    async with app.worker():
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        cancelled = await campaigns.cancel("live")
        await recorder.wait_count(EventKind.ACKED, cancelled.released, timeout=30)
        await asyncio.sleep(0.3)  # the counter middleware flushes shortly after
    final = await campaigns.progress("live")
    assert final.cancelled == cancelled.cancelled
    assert final.released + final.cancelled == n and final.pending == 0
    assert len(handled) == len(set(handled)) == final.released  # none twice, none cancelled
    assert final.processed == final.released and final.done
    stats = await q.stats()
    assert (stats.delayed, stats.depth, stats.in_flight) == (0, 0, 0)


async def test_a_released_message_retrying_in_the_delayed_set_is_not_cancelled(
        app: Tidings, recorder: Recorder, campaigns: Campaigns) -> None:
    q = app.queue("push")

    @q.handler
    async def handle(msg: Message) -> None:
        raise Retry(delay=3600)

    at = datetime.now(UTC) + timedelta(milliseconds=200)
    await campaigns.schedule("retrying", q, people(20), at=at)
    async with app.worker():
        await recorder.wait_count(EventKind.RETRIED, 20)
    assert (await q.stats()).delayed == 20  # back in the delayed set, later
    progress = await campaigns.cancel("retrying")
    assert (progress.cancelled, progress.released) == (0, 20)
    assert (await q.stats()).delayed == 20


# -- counting ----------------------------------------------------------------------------


async def test_processed_and_failed_are_counted_by_the_middleware(
        app: Tidings, recorder: Recorder, campaigns: Campaigns) -> None:
    q = app.queue("push", max_attempts=1)

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload["user"] % 4 == 0:
            raise ValueError("bad address")

    at = datetime.now(UTC) + timedelta(milliseconds=100)
    await campaigns.schedule("count", q, people(200), at=at)
    await q.publish({"user": 0})  # not a campaign message: not counted
    async with app.worker():
        await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED]
                                + recorder.counts[EventKind.DEAD_LETTERED] >= 201)
    progress = await campaigns.progress("count")
    assert (progress.released, progress.processed, progress.failed) == (200, 150, 50)
    assert progress.done and progress.settled == 200
    [listed] = await campaigns.list()
    assert listed.id == "count" and listed.processed == 150


# -- throttle ----------------------------------------------------------------------------


def assert_throttled(dues: list[int], per_minute: int) -> None:
    dues = sorted(dues)
    for i in range(len(dues) - per_minute):
        assert dues[i + per_minute] - dues[i] >= 60_000, (i, dues[i], dues[i + per_minute])


async def test_throttle_spreads_due_times(app: Tidings, campaigns: Campaigns) -> None:
    at = datetime(NEXT_YEAR, 3, 1, 9, 0, tzinfo=UTC)
    await campaigns.schedule("slow", "push", people(1000), at=at, throttle_per_minute=120)
    dues = sorted(d for d, _ in (await delayed(app.queue("push"))).values())
    base = int(at.timestamp() * 1000)
    assert dues[0] == base and dues[119] == base + 119 * 500 and dues[120] == base + 60_000
    assert dues[-1] < base + 9 * 60_000  # 1000 / 120 -> 9 minutes
    assert_throttled(dues, 120)


async def test_throttle_with_zones_never_sends_early(app: Tidings,
                                                     campaigns: Campaigns) -> None:
    await campaigns.schedule("zones", "push", people(600), local_time=time(9), date=DAY,
                             throttle_per_minute=50)
    found = (await delayed(app.queue("push"))).values()
    for due, msg in found:
        natural = NINE[ZONES[msg.payload["user"] % len(ZONES)]]
        assert natural.timestamp() * 1000 <= due < natural.timestamp() * 1000 + 3 * 60_000
    assert_throttled([d for d, _ in found], 50)


async def test_throttle_resumes_with_the_same_slots(app: Tidings, campaigns: Campaigns) -> None:
    at = datetime(NEXT_YEAR, 3, 1, 9, 0, tzinfo=UTC)
    everyone = people(900)
    await campaigns.schedule("whole", "push", everyone, at=at, throttle_per_minute=100)
    with pytest.raises(RuntimeError):
        await campaigns.schedule("split", "push", crash_after(everyone, 450), at=at,
                                 throttle_per_minute=100, chunk_size=100)
    await campaigns.schedule("split", "push", everyone, at=at, throttle_per_minute=100,
                             chunk_size=100)
    by_campaign: dict[str, dict[str, int]] = {"whole": {}, "split": {}}
    for due, msg in (await delayed(app.queue("push"))).values():
        by_campaign[msg.headers["campaign_id"]][msg.headers["recipient_id"]] = due
    assert by_campaign["whole"] == by_campaign["split"]
    assert_throttled(list(by_campaign["split"].values()), 100)


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"campaign_id": "has space"}, "campaign_id"),
        ({"local_time": None}, "local_time"),
        ({"at": datetime(2030, 1, 1, tzinfo=UTC)}, "local_time"),  # both given
        ({"local_time": time(9, tzinfo=UTC)}, "local_time"),
        ({"local_time": None, "at": datetime(2030, 1, 1)}, "at"),
        ({"date": "2030-01-01"}, "date"),
        ({"default_zone": "Nowhere/Town"}, "zone"),
        ({"throttle_per_minute": 0}, "throttle_per_minute"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"ambiguous": "both"}, "ambiguous"),
        ({"nonexistent": "later"}, "nonexistent"),
        ({"headers": {"campaign_id": "x"}}, "headers"),
        ({"if_past": "maybe"}, "if_past"),
        ({"recipients": [Recipient("", 1)]}, "recipients"),
        ({"recipients": [Recipient("a", 1, "Mars/Base")]}, "zone"),
        ({"recipients": [Recipient("a", b"x" * 300_000)]}, "payload"),
    ],
)
async def test_invalid_arguments_name_the_field(app: Tidings, campaigns: Campaigns,
                                                kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"campaign_id": "v", "queue": "push", "recipients": people(3),
                            "local_time": time(9), "date": DAY}
    args.update(kwargs)
    with pytest.raises(ValidationError) as exc:
        await campaigns.schedule(**args)
    assert exc.value.field == field


async def test_unknown_zone_of_a_recipient_is_a_schedule_error(app: Tidings,
                                                               campaigns: Campaigns) -> None:
    with pytest.raises(ScheduleError, match="recipient 'b'"):
        await campaigns.schedule("z", "push", [Recipient("a", 1), Recipient("b", 2, "X/Y")],
                                 local_time=time(9), date=DAY)


async def test_progress_of_an_unknown_campaign(app: Tidings, campaigns: Campaigns) -> None:
    with pytest.raises(CampaignNotFoundError):
        await campaigns.progress("nope")
    assert await campaigns.list() == []


# -- scale -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_million_recipients(app: Tidings, campaigns: Campaigns) -> None:
    n = 1_000_000
    zones = ["Asia/Tokyo", "America/New_York", "Europe/Berlin", "America/Sao_Paulo", None]
    recipients = (Recipient(f"user-{i}", {"u": i, "t": "promo"}, zones[i % 5])
                  for i in range(n))
    started = wall.perf_counter()
    progress = await campaigns.schedule("million", "push", recipients, local_time=time(9),
                                        date=DAY)
    elapsed = wall.perf_counter() - started
    print(f"\n1M recipients enqueued in {elapsed:.1f}s = {n / elapsed:,.0f} msg/s")
    assert (progress.scheduled, progress.pending, progress.status) == (n, n, "scheduled")
    assert (await app.queue("push").stats()).delayed == n
    started = wall.perf_counter()
    cancelled = await campaigns.cancel("million")
    print(f"1M cancelled in {wall.perf_counter() - started:.1f}s")
    assert cancelled.cancelled == n and (await app.queue("push").stats()).delayed == 0
