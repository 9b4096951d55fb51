"""Rate limits and fleet-wide concurrency caps wired into workers.

The fleet-wide claims are tested with real worker processes (``tidings worker`` on
tests/apps/flow_app.py); the semantics of single messages with in-process workers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from conftest import Recorder, collect_payloads, held_by_dead_consumer
from flow_helpers import stop_worker, workers
from tidings import EventKind, Message, Tidings

APP = "tests.apps.flow_app:app"


def env_of(app: Tidings, redis_url: str, **knobs: str) -> dict[str, str]:
    return {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": app.settings.key_prefix,
            **knobs}


async def calls_of(app: Tidings) -> list[list[Any]]:
    raw = await app.broker.client.lrange(f"{app.settings.key_prefix}:flowtest:calls", 0, -1)
    return [orjson.loads(item) for item in raw]


async def wait_calls(app: Tidings, count: int, timeout: float = 60.0) -> list[list[Any]]:
    key = f"{app.settings.key_prefix}:flowtest:calls"
    deadline = time.monotonic() + timeout
    while await app.broker.client.llen(key) < count:
        assert time.monotonic() < deadline, f"only {await app.broker.client.llen(key)} calls"
        await asyncio.sleep(0.05)
    return await calls_of(app)


async def wait_consumers(app: Tidings, count: int) -> None:
    """Until ``count`` workers of queue ``flow`` are up, so all of them get a share."""
    client = (await app.connect()).broker.client
    await wait_until_async(lambda: client.zcard(app.queue("flow").keys.consumers), count)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        level += step
        peak = max(peak, level)
    return peak


async def wait_until_async(read: Callable[[], Any], value: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while int(await read()) < value:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


# -- rate limits -----------------------------------------------------------------------


@pytest.mark.slow
async def test_queue_rate_limit_holds_across_two_processes(
        make_app: Callable[..., Tidings], redis_url: str) -> None:
    app = make_app()
    rate, burst, total = 100.0, 10, 500
    with workers(APP, env_of(app, redis_url, FLOW_RATE=f"{rate:g}/s", FLOW_BURST=str(burst)),
                 2):
        await wait_consumers(app, 2)
        await app.queue("flow").publish_many([{"n": i} for i in range(total)])
        calls = await wait_calls(app, total)
    starts = sorted(call[2] for call in calls)
    # The first `burst` calls ride the full bucket; after that one token per 1/rate s.
    measured = (total - 1 - burst) / (starts[-1] - starts[burst])
    print(f"\nqueue rate limit {rate:g}/s across 2 processes: measured {measured:.2f}/s "
          f"({(measured / rate - 1) * 100:+.2f}%)")
    assert abs(measured / rate - 1) < 0.05
    window = [sum(1 for t in starts if s <= t < s + 1.0) for s in starts]
    assert max(window) <= rate + burst + 2  # no second ever exceeds rate + burst
    assert len({call[4] for call in calls}) == 2  # both processes took part
    assert all(call[5] == 0 for call in calls)


@pytest.mark.slow
async def test_key_rate_limit_holds_across_two_processes(
        make_app: Callable[..., Tidings], redis_url: str) -> None:
    app = make_app()
    rate, per_key, keys = 4.0, 8, ("a", "b", "c")
    with workers(APP, env_of(app, redis_url, FLOW_KEY_RATE=f"{rate:g}/s"), 2):
        await wait_consumers(app, 2)
        published_at = time.time()  # the handlers stamp their calls with the same clock
        await app.queue("flow").publish_many(
            [{"key": key, "n": i} for i in range(per_key) for key in keys] + [{"n": -1}])
        calls = await wait_calls(app, per_key * len(keys) + 1)
    for key in keys:
        starts = sorted(call[2] for call in calls if call[1] == key)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # burst 1: the k-th token of a key is granted no sooner than k/rate after the
        # publish, and a call starts after its grant. (Not the gap between two starts: a
        # loaded machine may start one call late and the next on time.)
        early = [(k, round(start - published_at, 3)) for k, start in enumerate(starts)
                 if start < published_at + k / rate - 0.02]
        assert not early, (key, early)
        print(f"key {key}: {len(starts)} calls, mean gap {sum(gaps) / len(gaps):.3f}s "
              f"(limit {1 / rate:.3f}s)")
    assert all(call[5] == 0 for call in calls)  # waiting for a token spends no attempt


async def test_over_the_key_limit_waits_without_failing(app: Tidings,
                                                        recorder: Recorder) -> None:
    sms = app.queue("sms")
    app.flow.key_rate_limit("recipient", "1/min", key=lambda m: m.payload["to"]).protect(sms)
    seen: list[str] = []

    @sms.handler
    async def handle(msg: Message) -> None:
        seen.append(msg.payload["to"])

    ids = await sms.publish_many([{"to": "+1"}, {"to": "+1"}, {"to": "+2"}])
    async with app.worker():
        await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED] == 2
                                and recorder.counts[EventKind.SNOOZED] == 1)
    assert sorted(seen) == ["+1", "+2"]
    [snoozed] = recorder.of(EventKind.SNOOZED)
    assert snoozed.delay is not None and 50 < snoozed.delay < 70  # until +1's next token
    info = await sms.inspect(snoozed.message_id)
    assert info is not None and info.state == "delayed" and snoozed.message_id in ids
    assert info.message is not None and info.message.attempts == 0
    assert recorder.counts[EventKind.RETRIED] == 0


async def test_idle_queue_does_not_burn_tokens(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("digest")
    app.flow.rate_limit("digest", "1/min", burst=3).protect(q)

    @q.handler
    async def handle(msg: Message) -> None:
        pass

    async with app.worker():
        await q.publish(1)
        await recorder.wait_count(EventKind.ACKED, 1)
        await asyncio.sleep(1.0)  # many fetch-loop turns on an empty queue
        await q.publish_many([2, 3])
        await recorder.wait_count(EventKind.ACKED, 3, timeout=5)  # the two tokens were left
        await q.publish(4)
        await asyncio.sleep(0.5)
        assert recorder.counts[EventKind.ACKED] == 3  # the bucket is empty now
    assert (await q.stats()).depth == 1


async def test_rate_limited_queue_reclaims_a_dead_consumers_messages(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("digest", visibility_timeout=0.3)
    app.flow.rate_limit("digest", "100/s").protect(q)
    handled = collect_payloads(q)
    await held_by_dead_consumer(q, 3)  # and nothing else waits
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 3, timeout=10)
    assert sorted(handled) == [0, 1, 2]


# -- concurrency caps ------------------------------------------------------------------


@pytest.mark.slow
async def test_concurrency_cap_holds_across_two_processes(
        make_app: Callable[..., Tidings], redis_url: str) -> None:
    app = make_app()
    cap, total = 3, 60
    knobs = {"FLOW_CAP": str(cap), "FLOW_SLEEP": "0.05", "FLOW_CONCURRENCY": "8"}
    with workers(APP, env_of(app, redis_url, **knobs), 2):
        await wait_consumers(app, 2)
        await app.queue("flow").publish_many([{"n": i} for i in range(total)])
        calls = await wait_calls(app, total)
    peak = max_overlap([(call[2], call[3]) for call in calls])
    print(f"\nconcurrency cap {cap} across 2 processes: peak {peak}")
    assert peak == cap  # never above, and the cap is used
    assert len({call[4] for call in calls}) == 2
    assert all(call[5] == 0 for call in calls)  # waiting for a slot spends no attempt


@pytest.mark.slow
async def test_dead_workers_slot_frees_at_lease_expiry(
        make_app: Callable[..., Tidings], redis_url: str) -> None:
    app = make_app()
    flow = app.queue("flow")
    lease = 2.0
    env = env_of(app, redis_url, FLOW_CAP="1", FLOW_LEASE=str(lease), FLOW_VT="60")
    client = (await app.connect()).broker.client
    started = f"{app.settings.key_prefix}:flowtest:started"
    with workers(APP, env, 1) as [doomed]:
        await flow.publish({"sleep": 120})
        await wait_until_async(lambda: client.llen(started), 1)
        with workers(APP, env, 1):
            await asyncio.sleep(1.5)  # the second worker is up, waiting on the cap
            await flow.publish({"n": 1}, priority="high")
            await asyncio.sleep(0.5)
            assert await client.llen(started) == 1  # the dead-to-be worker holds the slot
            stop_worker(doomed, kill=True)
            killed_at = time.time()
            [call] = await wait_calls(app, 1, timeout=10)
    waited = call[2] - killed_at
    print(f"\nslot of a SIGKILLed worker freed {waited:.2f}s after the kill (lease {lease}s)")
    assert lease / 3 < waited < lease + 1.0


async def test_slot_is_held_only_while_the_handler_runs(app: Tidings,
                                                        recorder: Recorder) -> None:
    q = app.queue("email")
    cap = app.flow.concurrency("smtp", 2, lease=0.3).protect(q)
    running = 0
    peak = 0

    @q.handler(concurrency=10)
    async def handle(msg: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.5)  # longer than the lease: renewals must keep the slot
        running -= 1

    await q.publish_many(range(6))
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 6)
        assert await cap.held() == 0
    assert peak == 2 and cap.lost == 0
    assert recorder.counts[EventKind.RETRIED] == 0


async def test_no_slot_within_wait_puts_the_message_back(app: Tidings,
                                                         recorder: Recorder) -> None:
    q = app.queue("email")
    cap = app.flow.concurrency("smtp", 1, wait=0.1, snooze=0.2).protect(q)
    await app.connect()
    cap.cap.client = app.broker.client
    [held] = await cap.cap.acquire("smtp")  # someone else holds the only slot

    @q.handler
    async def handle(msg: Message) -> None:
        pass

    await q.publish("x")
    cap.gate_stage = None  # skip the gate: test the wrapper's own wait
    app.flow.gate(q).guards.remove(cap)
    async with app.worker():
        await recorder.wait_count(EventKind.SNOOZED, 1)
        await cap.cap.release("smtp", [held])
        await recorder.wait_count(EventKind.ACKED, 1)
    assert recorder.counts[EventKind.RETRIED] == 0
    assert recorder.of(EventKind.ACKED)[0].attempt == 0
