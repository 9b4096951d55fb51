"""The worker against a real server: outcomes, retries, leases, expiry, batches, priorities."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import msgpack
import orjson
import pytest

from conftest import Recorder, collect_payloads, held_by_dead_consumer
from tidings import DeadLetter, EventKind, Message, Outgoing, Retry, Snooze, Tidings


async def test_handled_message_is_acked_and_removed_from_the_stream(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    got: list[Message] = []

    @q.handler
    async def handle(msg: Message) -> None:
        got.append(msg)

    msg_id = await q.publish({"to": "a@b.c"}, correlation_id="corr-1")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    assert [m.id for m in got] == [msg_id]
    assert got[0].headers["correlation_id"] == "corr-1" and got[0].delivery == 1
    stats = await q.stats()
    assert (stats.depth, stats.in_flight, stats.dead) == (0, 0, 0)
    assert await app.broker.client.xlen(q.keys.normal) == 0  # settled entries are deleted
    assert await app.broker.client.hlen(q.keys.deliveries) == 0  # and so is their delivery counter
    assert await q.inspect(msg_id) is None


async def test_failures_retry_with_backoff_then_dead_letter_with_details(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("sms", max_attempts=3, backoff_base=0.02, backoff_cap=0.05)
    attempts: list[int] = []

    @q.handler
    async def handle(msg: Message) -> None:
        attempts.append(msg.attempts)
        raise ConnectionError("provider down")

    msg_id = await q.publish("hi")
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    assert attempts == [0, 1, 2]
    assert recorder.counts[EventKind.RETRIED] == 2
    [dead] = await q.dlq.list()
    assert dead.message_id == msg_id and dead.reason == "max_attempts"
    assert dead.error["type"] == "ConnectionError" and dead.error["message"] == "provider down"
    assert dead.error["attempts"] == 3 and "Traceback" in dead.error["traceback"]
    assert dead.dead_at is not None and dead.error["created_at"] > 0


async def test_per_message_max_attempts_overrides_the_queue(app: Tidings,
                                                            recorder: Recorder) -> None:
    q = app.queue("sms", max_attempts=10, backoff_base=0.01)

    @q.handler
    async def handle(msg: Message) -> None:
        raise RuntimeError("no")

    await q.publish("x", max_attempts=1)
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    assert recorder.counts[EventKind.RETRIED] == 0


async def test_retry_snooze_and_dead_letter_signals(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("push", max_attempts=2)
    seen: Counter[str] = Counter()

    @q.handler
    async def handle(msg: Message) -> None:
        seen[msg.payload] += 1
        if msg.payload == "snooze" and seen["snooze"] <= 3:
            raise Snooze(0.01)  # three snoozes, although max_attempts is 2
        if msg.payload == "retry" and msg.attempts == 0:
            raise Retry(timedelta(milliseconds=10), "try later")
        if msg.payload == "park":
            raise DeadLetter("unsubscribed user")

    for payload in ("snooze", "retry", "park"):
        await q.publish(payload)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2)
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    assert seen == {"snooze": 4, "retry": 2, "park": 1}
    assert recorder.counts[EventKind.SNOOZED] == 3
    [dead] = await q.dlq.list()
    assert dead.reason == "unsubscribed user"


async def test_handler_timeout_counts_as_a_failure(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("webhook", handler_timeout=0.05, max_attempts=1)

    @q.handler
    async def handle(msg: Message) -> None:
        await asyncio.sleep(10)

    await q.publish("slow")
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    [dead] = await q.dlq.list()
    assert dead.error["type"] == "HandlerTimeoutError"


async def test_sync_handlers_run_in_threads_concurrently(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("push")
    barrier_hits: list[str] = []
    import threading

    barrier = threading.Barrier(4, timeout=10)

    @q.handler(concurrency=4)
    def handle(msg: Message) -> None:
        barrier.wait()  # only passes if 4 handlers run at once
        barrier_hits.append(threading.current_thread().name)

    await q.publish_many(range(4))
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 4)
    assert len(set(barrier_hits)) == 4


async def test_concurrency_limit_per_handler_is_respected(app: Tidings,
                                                          recorder: Recorder) -> None:
    q = app.queue("email")
    running = peak = 0

    @q.handler(concurrency=3)
    async def handle(msg: Message) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    await q.publish_many(range(30))
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 30)
    assert peak == 3


async def test_batch_handler_settles_each_message_on_its_own(app: Tidings,
                                                             recorder: Recorder) -> None:
    q = app.queue("digest", max_attempts=1)
    sizes: list[int] = []

    @q.handler(batch_size=10, batch_wait=0.2)
    async def handle(batch: list[Message]) -> None:
        sizes.append(len(batch))
        for msg in batch:
            if msg.payload % 10 == 3:
                msg.dead_letter("bad address")
            elif msg.payload % 10 == 7:
                msg.fail(ValueError("bounced"))

    await q.publish_many(range(25))
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 20)
        await recorder.wait_count(EventKind.DEAD_LETTERED, 5)
    assert sum(sizes) == 25 and max(sizes) == 10
    reasons = Counter(d.reason for d in await q.dlq.list())
    assert reasons == {"bad address": 3, "max_attempts": 2}


async def test_batch_handler_exception_fails_the_unsettled_messages(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("digest", max_attempts=1)

    @q.handler(batch_size=5, batch_wait=0.05)
    async def handle(batch: list[Message]) -> None:
        batch[0].dead_letter("first")
        raise RuntimeError("whole batch failed")

    await q.publish_many(range(5))
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 5)
    reasons = Counter(d.reason for d in await q.dlq.list())
    assert reasons == {"first": 1, "max_attempts": 4}


async def test_expired_message_is_never_handed_to_a_handler(app: Tidings,
                                                            recorder: Recorder) -> None:
    q = app.queue("otp")
    drop = app.queue("promo", on_expire="drop")
    handled: list[object] = []

    @q.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    @drop.handler
    async def handle_promo(msg: Message) -> None:
        handled.append(msg.payload)

    await q.publish("stale", delay=0.05, expires_in=0.01)
    await drop.publish("stale-promo", delay=0.05, expires_in=0.01)
    await q.publish("fresh", expires_in=60)
    async with app.worker():
        await recorder.wait_count(EventKind.EXPIRED, 2)
        await recorder.wait_count(EventKind.ACKED, 1)
    assert handled == ["fresh"]
    [dead] = await q.dlq.list()
    assert dead.reason == "expired"
    assert (await drop.stats()).dead == 0
    assert (await drop.stats()).counters["expired_dropped"] == 1


async def test_delayed_message_is_not_delivered_before_it_is_due(app: Tidings,
                                                                 recorder: Recorder) -> None:
    q = app.queue("reminder")
    delivered_at: list[float] = []

    @q.handler
    async def handle(msg: Message) -> None:
        delivered_at.append(time.time())

    published = time.time()
    await q.publish("ping", delay=0.3)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    assert delivered_at[0] - published >= 0.29


async def test_undecodable_entry_goes_to_the_dlq_and_the_worker_keeps_going(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    handled: list[object] = []

    @q.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    await app.connect()
    client = app.broker.client
    await client.xadd(q.keys.normal, {"i": "foreign-1", "m": b"\xc1 not msgpack"})
    await client.xadd(q.keys.normal, {"something": "else"})
    await client.xadd(q.keys.normal, {"m": msgpack.packb({"no": "envelope"})})
    await q.publish("good")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
        await recorder.wait_count(EventKind.DEAD_LETTERED, 3)
    assert handled == ["good"]
    dead = await q.dlq.list()
    assert [d.reason for d in dead] == ["undecodable"] * 3
    assert all(d.message is None for d in dead)
    assert {d.raw for d in dead} == {b"\xc1 not msgpack", b"", msgpack.packb({"no": "envelope"})}
    assert (await q.stats()).in_flight == 0


async def test_long_handler_keeps_its_lease_by_heartbeat(make_app: Callable[..., Tidings]) -> None:
    recorder = Recorder()
    app = make_app(middleware=[recorder])
    q = app.queue("report", visibility_timeout=0.3)
    runs: list[str] = []

    @q.handler
    async def handle(msg: Message) -> None:
        runs.append(msg.id)
        await asyncio.sleep(1.5)  # five visibility timeouts

    other = make_app()  # a second worker that would reclaim an expired lease
    other_q = other.queue("report", visibility_timeout=0.3)

    @other_q.handler
    async def steal(msg: Message) -> None:
        runs.append("stolen:" + msg.id)

    await q.publish("big")
    async with app.worker(), other.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    assert len(runs) == 1 and not runs[0].startswith("stolen")
    assert recorder.counts[EventKind.LEASE_LOST] == 0


async def test_late_ack_after_reclaim_is_refused_and_reported(
        make_app: Callable[..., Tidings]) -> None:
    slow_events, fast_events = Recorder(), Recorder()
    slow_app = make_app(middleware=[slow_events])
    fast_app = make_app(middleware=[fast_events])
    slow_q = slow_app.queue("email", visibility_timeout=0.3)
    fast_q = fast_app.queue("email", visibility_timeout=0.3)
    release = asyncio.Event()

    @slow_q.handler
    async def frozen(msg: Message) -> None:
        await release.wait()

    @fast_q.handler
    async def healthy(msg: Message) -> None:
        release.set()

    await slow_q.publish("once")
    async with slow_app.worker() as slow_worker:
        await slow_events.wait_count(EventKind.DELIVERED, 1)
        # Simulate a stalled process: no heartbeats (its lease runs out), no reclaiming.
        for runner in slow_worker.runners:
            runner.heartbeat = _noop  # type: ignore[method-assign]
            runner.reclaim = _noop  # type: ignore[method-assign]
        async with fast_app.worker():
            await fast_events.wait_count(EventKind.ACKED, 1)
            await slow_events.wait_count(EventKind.LEASE_LOST, 1)
    assert slow_events.counts[EventKind.ACKED] == 0  # the late ack was not applied
    stats = await fast_q.stats()
    assert (stats.depth, stats.in_flight, stats.dead) == (0, 0, 0)
    assert stats.counters.get("acked:1") == 1  # applied exactly once


async def _noop() -> None:
    return None


async def test_messages_of_a_dead_consumer_are_reclaimed(make_app: Callable[..., Tidings],
                                                         recorder: Recorder) -> None:
    app = make_app(middleware=[recorder])
    q = app.queue("email", visibility_timeout=0.3)
    handled = collect_payloads(q)
    await held_by_dead_consumer(q, 5)
    assert (await q.stats()).in_flight == 5
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 5)
    assert sorted(handled) == [0, 1, 2, 3, 4]


async def test_high_lane_is_served_first_and_shares_follow_weights(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("mixed", weights=(6, 3, 1))
    order: list[str] = []

    @q.handler(concurrency=1)
    async def handle(msg: Message) -> None:
        order.append(msg.priority.label)

    items = [Outgoing(i, lane) for lane in ("low", "normal", "high") for i in range(400)]
    await q.publish_many(items)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 500)
    first = Counter(order[:500])
    shares = {lane: first[lane] / 500 for lane in ("high", "normal", "low")}
    assert shares["high"] == pytest.approx(0.6, abs=0.05)
    assert shares["normal"] == pytest.approx(0.3, abs=0.05)
    assert shares["low"] == pytest.approx(0.1, abs=0.05)


async def test_weights_change_at_run_time_without_restart(app: Tidings,
                                                          recorder: Recorder) -> None:
    q = app.queue("mixed", weights=(6, 3, 1), visibility_timeout=0.3)
    order: list[str] = []
    gate = asyncio.Event()

    @q.handler(concurrency=1)
    async def handle(msg: Message) -> None:
        await gate.wait()
        order.append(msg.priority.label)

    await q.publish_many([Outgoing(i, lane) for lane in ("high", "normal", "low")
                          for i in range(300)])
    async with app.worker() as worker:
        await q.set_weights(1, 1, 1)
        for runner in worker.runners:  # what the next heartbeat (vt / 3) does by itself
            await runner.heartbeat()
        gate.set()
        await recorder.wait_count(EventKind.ACKED, 200)
    tail = Counter(order[20:200])  # after the change has surely been applied
    assert tail["low"] / 180 == pytest.approx(1 / 3, abs=0.05)  # was 0.1 under 6:3:1
    assert tail["high"] / 180 == pytest.approx(1 / 3, abs=0.05)


async def test_idle_lane_gives_its_share_to_the_others(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("bulk", weights=(6, 3, 1))

    @q.handler(concurrency=8)
    async def handle(msg: Message) -> None:
        return None

    await q.publish_many([Outgoing(i, "low") for i in range(300)])
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 300)


async def test_new_high_message_overtakes_a_low_backlog(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("bulk")
    order: list[object] = []

    @q.handler(concurrency=4)
    async def handle(msg: Message) -> None:
        order.append(msg.payload)
        if msg.payload == 0:
            await q.publish("urgent", priority="high")
        await asyncio.sleep(0.002)

    await q.publish_many([Outgoing(i, "low") for i in range(200)])
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 201)
    # Prefetch is bounded by free slots: the urgent message waits at most one fetch cycle.
    assert order.index("urgent") <= order.index(0) + 4 + 1


async def test_dead_letter_error_json_is_json(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("sms", max_attempts=1)

    @q.handler
    async def handle(msg: Message) -> None:
        raise KeyError("missing")

    await q.publish("x")
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    entries = await app.broker.client.xrange(q.keys.dlq)
    error = orjson.loads(entries[0][1][b"error"])
    assert error["type"] == "KeyError"


async def test_worker_stops_even_if_a_service_swallows_its_cancellation(
        app: Tidings, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    import tidings.worker.worker

    monkeypatch.setattr(tidings.worker.worker, "BACKGROUND_STOP_GRACE", 0.2)
    q = app.queue("email")
    cancelled, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @q.handler
    async def handle(msg: Message) -> None:
        pass

    async def stubborn(worker: object) -> None:
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            cancelled.set()  # and carry on: the bug the worker must survive
            await release.wait()
            finished.set()

    app.add_worker_service(stubborn)
    await q.publish("x")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    # The worker asked it to stop and returned without waiting for it to give way.
    assert cancelled.is_set() and not finished.is_set()
    release.set()
