"""Overload: bounded queues, a full server, producer backpressure; nothing accepted is lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from conftest import Recorder
from fault_helpers import poll
from servers import private_server
from tidings import (
    ConfigError,
    EventKind,
    Message,
    Outgoing,
    QueueFullError,
    Settings,
    SettingsFileError,
    Tidings,
    ValidationError,
)
from tidings.core.clock import ManualClock
from tidings.engine.embedded import find_server_binary
from tidings.engine.memory import CALM_INTERVAL, MAX_SLOWDOWN, MemoryGauge


async def test_a_queue_at_max_depth_refuses_a_publish_whole(app: Tidings) -> None:
    q = app.queue("sms", max_depth=10)
    await q.publish_many(range(8))
    with pytest.raises(QueueFullError) as info:
        await q.publish_many(range(5))  # 8 + 5 > 10: none of the five goes in
    error = info.value
    assert (error.queue, error.reason, error.depth, error.limit) == ("sms", "max_depth", 8, 10)
    assert error.retry_after > 0 and "nothing was stored" in str(error)
    assert (await q.stats()).depth == 8
    await q.publish_many(range(2))
    with pytest.raises(QueueFullError):
        await q.publish("one too many")
    assert (await q.stats()).depth == 10


async def test_max_depth_counts_messages_in_flight_until_they_settle(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("sms", max_depth=3)
    release = asyncio.Event()
    all_started = asyncio.Event()
    started: list[str] = []

    @q.handler(concurrency=3)
    async def handle(msg: Message) -> None:
        started.append(msg.id)
        if len(started) == 3:
            all_started.set()
        await release.wait()

    await q.publish_many(range(3))
    async with app.worker():
        await asyncio.wait_for(all_started.wait(), 20)
        stats = await q.stats()
        assert (stats.depth, stats.in_flight) == (0, 3)
        with pytest.raises(QueueFullError):  # the three in flight still count
            await q.publish("x")
        release.set()
        await recorder.wait_count(EventKind.ACKED, 3)
    assert await q.publish("room again")


async def test_duplicates_and_delayed_messages_are_not_refused_at_max_depth(
        app: Tidings) -> None:
    q = app.queue("sms", max_depth=2)
    first = await q.publish("a", idempotency_key="order-1")
    await q.publish("b")
    assert await q.publish("a again", idempotency_key="order-1") == first  # adds nothing
    later = await q.publish("tomorrow", delay=timedelta(hours=1))  # the delayed set
    stats = await q.stats()
    assert (stats.depth, stats.delayed) == (2, 1)
    assert later != first


async def test_shed_low_refuses_low_priority_first_and_keeps_room_for_urgent(
        app: Tidings) -> None:
    q = app.queue("push", max_depth=10, on_full="shed_low")  # low may fill 8 of the 10
    await q.publish_many([Outgoing(i, priority="low") for i in range(8)])
    with pytest.raises(QueueFullError) as info:
        await q.publish("promo", priority="low")
    assert info.value.depth == 8
    await q.publish("otp", priority="high")
    await q.publish("receipt", priority="normal")
    with pytest.raises(QueueFullError):
        await q.publish("otp 2", priority="high")
    assert (await q.stats()).lanes == {"high": 1, "normal": 1, "low": 8}


def test_max_depth_is_validated(app: Tidings) -> None:
    with pytest.raises(ConfigError) as info:
        app.queue("sms", max_depth=0)
    assert info.value.field == "max_depth"
    with pytest.raises(ConfigError) as info:
        app.queue("sms2", max_depth=5, on_full="drop_everything")
    assert info.value.field == "on_full"


def test_memory_thresholds_are_validated() -> None:
    with pytest.raises((ValidationError, SettingsFileError, ValueError)) as info:
        Settings(memory_slow_at=0.9, memory_refuse_at=0.8)
    assert "memory_refuse_at" in str(info.value)


def test_the_memory_gauge_slows_then_refuses() -> None:
    gauge = MemoryGauge(Settings(memory_slow_at=0.8, memory_refuse_at=0.9), ManualClock())
    gauge.enabled = False  # no server here: read only what update() was given

    def delay_at(used: int, maxmemory: int = 1000) -> float:
        gauge.update({"used_memory": used, "maxmemory": maxmemory})
        return gauge.delay("sms", None)

    assert delay_at(500) == 0.0
    assert delay_at(5000, maxmemory=0) == 0.0  # no maxmemory: nothing to measure against
    assert 0 < delay_at(820) < delay_at(880) < MAX_SLOWDOWN
    with pytest.raises(QueueFullError) as info:
        delay_at(900)
    assert info.value.reason == "server_memory" and "90%" in str(info.value)


@pytest.fixture
def full_server_port() -> Any:
    with private_server(find_server_binary(), "--maxmemory", "4mb",
                        "--maxmemory-policy", "noeviction") as port:
        yield port


async def test_a_full_server_refuses_publishes_whole_and_workers_still_drain_it(
        full_server_port: int) -> None:
    app = Tidings(f"redis://127.0.0.1:{full_server_port}/0", key_prefix="full",
                  memory_slow_at=1.0, memory_refuse_at=1.0)  # the server's own refusal
    q = app.queue("email")
    accepted: list[str] = []
    try:
        with pytest.raises(QueueFullError) as info:
            while True:
                accepted += await q.publish_many(
                    [{"to": f"user{len(accepted) + i}", "body": "x" * 200} for i in range(20)])
        assert info.value.reason == "server_memory" and "maxmemory" in str(info.value)
        stats = await q.stats()
        assert stats.depth == len(accepted) > 1000  # the refused chunk left nothing behind
        seen: list[str] = []
        done = asyncio.Event()

        @q.handler(concurrency=32)
        async def handle(msg: Message) -> None:
            seen.append(msg.id)
            if len(seen) == len(accepted):
                done.set()

        async with app.worker():  # starts, fetches and acks on the full server
            await asyncio.wait_for(done.wait(), 60)
        assert sorted(seen) == sorted(accepted)
        assert await q.publish("room again")
    finally:
        await app.close()


async def test_producers_are_refused_before_the_server_is_full(full_server_port: int) -> None:
    url = f"redis://127.0.0.1:{full_server_port}/0"
    admin = Redis.from_url(url)
    clock = ManualClock()
    app = Tidings(url, key_prefix="near", memory_slow_at=0.5, memory_refuse_at=0.6,
                  clock=clock)
    q = app.queue("email")
    try:
        await q.publish("fits")
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", int(used / 0.62))  # 62% used: past refuse_at
        clock.advance(CALM_INTERVAL)  # the sample taken at connect is now stale
        await q.publish("the publish that takes the new sample")
        async def sampled() -> bool:  # the sample lands in the background
            return app.broker.memory.share >= 0.6

        await poll(sampled, 10, "the gauge's fresh sample")
        with pytest.raises(QueueFullError) as info:
            await q.publish("refused by tidings, not by the server")
        assert info.value.reason == "server_memory" and "of maxmemory" in str(info.value)
        assert (await q.stats()).depth == 2
    finally:
        await app.close()
        await admin.aclose()


@pytest.mark.slow
async def test_at_twice_the_load_nothing_accepted_is_lost_and_low_is_shed_first(
        redis_url: str) -> None:
    """A real worker process, a producer offering twice what it measured it can take."""
    from bench.overload import capacity, scenario

    cap = await capacity(redis_url, 1500)
    result = await scenario(redis_url, 2 * cap, 2.0, max_depth=int(cap), on_full="shed_low")
    for lane in ("high", "normal", "low"):
        side = result[lane]
        assert side["offered"] == side["accepted"] + side["refused"]
        assert side["lost"] == 0 and side["processed"] == side["accepted"], (lane, side)
    assert result["processed_twice"] == 0
    assert result["low"]["refused"] > 0  # the overload was real, and low gave way first
    assert result["high"]["refused"] <= result["low"]["refused"]


# Scripts that admit new messages: a full server must refuse them before they write. Every
# other script keeps accepted messages moving or frees memory, and must run on a full server.
ADMITTING = {"publish", "fair_publish", "campaign_publish", "campaign_create",
             "ordered_publish", "ordered_replay", "dlq_replay", "schedule_save", "route"}


def test_only_scripts_that_admit_messages_are_refused_by_a_full_server() -> None:
    from tidings.engine.scripts import LIBRARY

    refused = {s.name for s in LIBRARY if not s.source.startswith("#!lua flags=allow-oom")}
    assert refused == ADMITTING, (
        "a new script must say whether a full server may refuse it: add `-- @flags "
        "allow-oom` to its header, or add it to ADMITTING if it stores new messages")
    assert all(s.source.startswith("#!lua") for s in LIBRARY)
