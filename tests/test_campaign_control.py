"""Campaign pause, resume, update and delete against a real server (injected clock)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from test_campaign import people
from tidings import Queue, Tidings, ValidationError
from tidings.queues import scripts
from tidings.scheduling.campaigns import (
    CampaignConflictError,
    CampaignNotFoundError,
    Campaigns,
)

T0 = datetime(datetime.now(UTC).year + 1, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def make_app(make_app: Callable[..., Tidings]) -> Callable[..., Tidings]:
    def factory(**kwargs: Any) -> Tidings:
        app = make_app(**kwargs)
        app.queue("push")
        return app

    return factory


class Clock:
    def __init__(self) -> None:
        self.now = T0 - timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def campaigns(app: Tidings) -> Campaigns:
    return Campaigns.of(app)


@pytest.fixture
def campaign_clock(campaigns: Campaigns) -> Clock:
    """The campaigns' clock, injected."""
    found = Clock()
    campaigns.clock = found
    return found


async def delayed(q: Queue) -> dict[str, tuple[int, bytes]]:
    """The delayed set: id -> (due ms, stored body)."""
    client = q.app.broker.client
    scores = dict(await client.zrange(q.keys.delayed, 0, -1, withscores=True))
    bodies = await client.hgetall(q.keys.delayed_bodies)
    return {i.decode(): (int(due), bodies[i]) for i, due in scores.items()}


async def release_due(q: Queue, limit: int) -> int:
    """What a worker's fetch does: promote up to ``limit`` due messages; how many left."""
    client = q.app.broker.client
    before = await client.zcard(q.keys.delayed)
    await scripts.fetch(client, q.keys, consumer="x", quotas=(0, 0, 0), capacity=0,
                        promote_limit=limit, on_expire="dead_letter")
    return int(before - await client.zcard(q.keys.delayed))


async def make_all_due(campaigns: Campaigns, q: Queue, campaign_id: str) -> None:
    """Every waiting message's due time (and the campaign's record of it) set to the epoch."""
    client = q.app.broker.client
    waiting = dict.fromkeys(await client.zrange(q.keys.delayed, 0, -1), 0)
    await client.zadd(q.keys.delayed, waiting, xx=True)
    await client.zadd(q.keys.campaign(campaign_id).pending, waiting, xx=True)


async def test_pause_stops_release_and_resume_continues(
        app: Tidings, campaigns: Campaigns, campaign_clock: Clock) -> None:
    q = app.queue("push")
    await campaigns.schedule("bf", q, people(100), at=T0)
    await make_all_due(campaigns, q, "bf")
    assert await release_due(q, 30) == 30
    paused = await campaigns.pause("bf")
    assert paused.paused and paused.as_dict()["paused"] is True
    assert (paused.released, paused.pending) == (30, 70)
    assert await release_due(q, 1000) == 0  # nothing released while paused
    still = await campaigns.progress("bf")
    assert (still.released, still.pending, still.paused) == (30, 70, True)
    assert (await campaigns.pause("bf")).pending == 70  # pausing again is harmless
    campaign_clock.now += timedelta(minutes=5)
    resumed = await campaigns.resume("bf")
    assert not resumed.paused and resumed.pending == 70
    assert await release_due(q, 1000) == 70
    final = await campaigns.progress("bf")
    assert (final.released, final.pending) == (100, 0)
    assert final.scheduled == final.released + final.pending + final.cancelled


async def test_resume_moves_due_times_later_by_the_pause(
        app: Tidings, campaigns: Campaigns, campaign_clock: Clock) -> None:
    q = app.queue("push")
    await campaigns.schedule("spaced", q, people(120), at=T0, throttle_per_minute=60,
                             expires_in=60)
    before = {i: due for i, (due, _) in (await delayed(q)).items()}
    await campaigns.pause("spaced")
    assert await delayed(q) == {}
    campaign_clock.now += timedelta(minutes=10)
    await campaigns.resume("spaced")
    after = {i: due for i, (due, _) in (await delayed(q)).items()}
    assert after == {i: due + 600_000 for i, due in before.items()}  # spacing kept, no burst
    expiry = {i: int(body.split(b"|", 2)[1]) for i, (_, body) in (await delayed(q)).items()}
    assert expiry == {i: due + 600_000 + 60_000 for i, due in before.items()}  # moved too


async def test_cancel_while_paused_cancels_the_held_messages(
        app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await campaigns.schedule("held", q, people(50), at=T0)
    await campaigns.pause("held")
    final = await campaigns.cancel("held")
    assert (final.cancelled, final.pending, final.paused) == (50, 0, False)
    assert (await q.stats()).delayed == 0


async def test_update_throttle_respaces_the_waiting_messages(
        app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await campaigns.schedule("rate", q, people(100), at=T0, throttle_per_minute=100)
    updated = await campaigns.update("rate", throttle_per_minute=10)
    dues = sorted(due for due, _ in (await delayed(q)).values())
    start = int(T0.timestamp() * 1000)
    assert dues == [start + i * 6000 for i in range(100)]
    assert updated.pending == 100


async def test_update_moves_the_send_time_of_a_campaign_not_started(
        app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await campaigns.schedule("later", q, people(20), at=T0)
    await campaigns.update("later", at=T0 + timedelta(hours=2))
    dues = {due for due, _ in (await delayed(q)).values()}
    assert dues == {int((T0 + timedelta(hours=2)).timestamp() * 1000)}


async def test_update_refuses_other_fields_and_a_started_campaign(
        app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await campaigns.schedule("fixed", q, people(20), at=T0)
    with pytest.raises(ValidationError) as err:
        await campaigns.update("fixed", priority="high")
    assert err.value.field == "priority"
    with pytest.raises(ValidationError) as err:
        await campaigns.update("fixed", throttle_per_minute=0)
    assert err.value.field == "throttle_per_minute"
    await make_all_due(campaigns, q, "fixed")
    await release_due(q, 5)
    with pytest.raises(CampaignConflictError):
        await campaigns.update("fixed", at=T0 + timedelta(hours=1))


async def test_delete_is_refused_while_running_and_removes_a_cancelled_one(
        app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await campaigns.schedule("gone", q, people(10), at=T0)
    with pytest.raises(CampaignConflictError):
        await campaigns.delete("gone")
    await campaigns.cancel("gone")
    await campaigns.delete("gone")
    with pytest.raises(CampaignNotFoundError):
        await campaigns.progress("gone")
    assert await app.broker.client.keys(f"{q.keys.campaign('gone').record}*") == []
    assert [c.id for c in await campaigns.list()] == []


async def test_a_finished_campaign_can_be_deleted(app: Tidings, campaigns: Campaigns) -> None:
    q = app.queue("push")
    await campaigns.schedule("done", q, people(10), at=T0)
    await make_all_due(campaigns, q, "done")
    await release_due(q, 100)
    await campaigns.delete("done")
    with pytest.raises(CampaignNotFoundError):
        await campaigns.delete("done")
