"""The worker cannot be jammed: reclaim under a backlog, malformed entries, lease races.

Each test here reproduces a defect found by fault injection and fuzzing (issue 7) against
a real server: a dead consumer's messages waiting behind a live worker's whole backlog, an
entry whose headers are not a map stalling a worker for good, a heartbeat racing an ack
reporting a lease as lost, one bad message failing the ack of the others.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from conftest import Recorder, held_by_dead_consumer
from tidings import EventKind, Message, Middleware, Queue, Tidings
from tidings.queues import scripts as queue_scripts


def envelope(msg_id: str, **fields: Any) -> bytes:
    """A stream entry's envelope as a (possibly buggy or hostile) producer wrote it."""
    doc = {"v": 1, "id": msg_id, "q": "email", "p": {"n": msg_id}, "pr": 1, "a": 0,
           "c": int(time.time() * 1000)}
    doc.update(fields)
    return msgpack.packb(doc, use_bin_type=True)


async def add_raw(q: Queue, msg_id: str, raw: bytes) -> None:
    await q.app.connect()
    await q.app.broker.client.xadd(q.keys.normal, {"i": msg_id, "m": raw})


async def test_a_dead_consumers_messages_come_back_before_a_large_backlog(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email", visibility_timeout=0.5)
    order: list[Any] = []

    @q.handler(concurrency=2)
    async def handle(msg: Message) -> None:
        order.append(msg.payload)
        await asyncio.sleep(0.25)  # long enough that the slots are (almost) never free

    await held_by_dead_consumer(q, 4)  # payloads 0..3, read by a consumer that died
    backlog = 200  # 200 x 250 ms over 2 slots: 25 s of work
    await q.publish_many(f"b{i}" for i in range(backlog))
    async with app.worker():
        await recorder.wait_for(lambda: all(i in order for i in range(4)), timeout=40)
        came_back_at = max(order.index(i) for i in range(4))
    # Back within about one lease plus one reclaim pass (about 1 s, some 10 messages),
    # not once the backlog is gone; half the backlog is a generous bound on a busy machine.
    assert came_back_at < backlog // 2, came_back_at


async def test_headers_that_are_not_a_map_are_dead_lettered_and_do_not_jam_the_worker(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    handled: list[Any] = []

    @q.handler(concurrency=1)  # one slot: a leaked slot would stop everything behind it
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    await add_raw(q, "bad-headers", envelope("bad-headers", h=1))
    await q.publish_many(range(5))
    async with app.worker() as worker:
        await recorder.wait_count(EventKind.ACKED, 5)
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
        assert worker.running == 0
    assert handled == list(range(5))
    [dead] = await q.dlq.list()
    assert (dead.message_id, dead.reason) == ("bad-headers", "undecodable")
    assert dead.error["field"] == "h"
    assert await _settled(q, dead=1)


BAD_FIELDS: list[tuple[str, Any]] = [
    ("id", None), ("id", {}), ("id", [1]), ("a", ""), ("c", ""), ("c", math.nan),
    ("c", math.inf), ("h", "abc"), ("pr", 7), ("ma", "3"), ("x", "soon"), ("v", "x"),
]


async def test_malformed_envelopes_are_dead_lettered_naming_the_field(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email", max_attempts=2)
    handled: list[Any] = []

    @q.handler(concurrency=4)
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    for i, (field, value) in enumerate(BAD_FIELDS):
        await add_raw(q, f"bad-{i}", envelope(f"bad-{i}", **{field: value}))
        await q.publish(i)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, len(BAD_FIELDS))
        await recorder.wait_count(EventKind.DEAD_LETTERED, len(BAD_FIELDS))
    assert sorted(handled) == list(range(len(BAD_FIELDS)))  # never a malformed one
    dead = {d.message_id: d for d in await q.dlq.list(100)}
    for i, (field, _) in enumerate(BAD_FIELDS):
        assert dead[f"bad-{i}"].reason == "undecodable"
        assert dead[f"bad-{i}"].error["field"] == field
    assert await _settled(q, dead=len(BAD_FIELDS))


@pytest.mark.parametrize("version", [2, 99])
async def test_an_envelope_of_a_newer_version_is_dead_lettered_as_unsupported(
        app: Tidings, recorder: Recorder, version: int) -> None:
    q = app.queue("email")
    handled: list[Any] = []

    @q.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    await add_raw(q, "from-the-future", envelope("from-the-future", v=version))
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    assert handled == []
    [dead] = await q.dlq.list()
    assert dead.reason == "unsupported_version" and "upgrade" in dead.error["message"]


async def test_an_entry_whose_id_field_differs_from_its_envelope_is_dead_lettered(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")

    @q.handler
    async def handle(msg: Message) -> None:
        raise AssertionError("a moved envelope must not run")

    await add_raw(q, "stream-id", envelope("envelope-id"))
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    [dead] = await q.dlq.list()
    assert (dead.reason, dead.error["field"]) == ("undecodable", "id")


async def test_a_heartbeat_racing_an_ack_reports_no_lost_lease(
        app: Tidings, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    q = app.queue("email", visibility_timeout=30)  # no periodic heartbeat during the test
    release = asyncio.Event()

    @q.handler
    async def handle(msg: Message) -> None:
        await release.wait()

    # Force the race: the heartbeat's snapshot holds the message, the ack is applied on the
    # server, the renewal runs (and finds the counter gone) and is processed first.
    ack_applied, heartbeat_done = asyncio.Event(), asyncio.Event()
    real_ack, real_extend = queue_scripts.ACK, queue_scripts.EXTEND

    async def ack(client: Any, keys: Any, args: Any) -> Any:
        result = await real_ack(client, keys, args)
        ack_applied.set()
        await heartbeat_done.wait()
        return result

    async def extend(client: Any, keys: Any, args: Any) -> Any:
        if len(args) > 2:  # the renewal that holds the message
            await ack_applied.wait()
        return await real_extend(client, keys, args)

    monkeypatch.setattr(queue_scripts, "ACK", ack)
    monkeypatch.setattr(queue_scripts, "EXTEND", extend)
    await q.publish("once")
    async with app.worker() as worker:
        await recorder.wait_count(EventKind.DELIVERED, 1)
        beat = asyncio.ensure_future(worker.runners[0].heartbeat())
        await asyncio.sleep(0)  # the heartbeat takes its snapshot and waits in extend
        release.set()
        await beat
        heartbeat_done.set()
        await recorder.wait_count(EventKind.ACKED, 1)
    assert recorder.counts[EventKind.LEASE_LOST] == 0
    assert worker.lease_lost == 0


async def test_one_failing_message_does_not_fail_the_ack_of_the_others(
        app: Tidings, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    q = app.queue("email", visibility_timeout=0.5)
    runs: list[Any] = []
    gate = asyncio.Event()

    @q.handler(concurrency=20)
    async def handle(msg: Message) -> None:
        runs.append(msg.payload)
        await gate.wait()  # finish together, so their acks go out in one batch

    refused: list[str] = []
    real_ack = queue_scripts.ACK

    async def ack(client: Any, keys: Any, args: Any) -> Any:
        # (lane, entry id, token, msg id) per message: the target's first delivery cannot be
        # acked (like a message whose id the client cannot pack), its redelivery can.
        settles = list(zip(args[3::4], args[4::4], strict=True))
        if (1, target[0]) in settles:
            refused.append(target[0])
            raise TypeError("this message's ack cannot be packed")
        return await real_ack(client, keys, args)

    monkeypatch.setattr(queue_scripts, "ACK", ack)
    ids = await q.publish_many(range(10))
    target = [ids[4]]
    async with app.worker():
        await recorder.wait_for(lambda: len(runs) == 10)
        gate.set()
        await recorder.wait_count(EventKind.ACKED, 10)
    assert set(refused) == {ids[4]}
    # The nine others were acked once and never ran again; only the failed one came back.
    assert sorted(runs) == sorted([*range(10), 4])
    assert await _settled(q)


async def _settled(q: Queue, dead: int = 0) -> bool:
    s = await q.stats()
    return (s.depth, s.in_flight, s.delayed, s.dead) == (0, 0, 0, dead)


# -- an exception injected at every stage of fetch, dispatch and settle ---------------------


class RaisingMiddleware(Middleware):
    """Raises from around_handler for one payload, before calling the handler."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    async def around_handler(self, message: Any, call_next: Callable[[], Any]) -> Any:
        if isinstance(message, Message) and message.payload == self.payload:
            raise RuntimeError("middleware failed")
        return await call_next()


# stage -> the dead-letter reason the target ends with (None: it ends processed)
STAGES = {"decode": "undecodable", "delivered_event": None, "around_handler": "max_attempts",
          "retry_decision": "settle_failed", "retry_settle": "settle_failed",
          "dead_letter_settle": "settle_failed", "ack_settle": None}


@pytest.mark.parametrize("stage", list(STAGES))
async def test_an_exception_at_any_stage_leaks_no_slot_and_settles_the_message(
        make_app: Callable[..., Tidings], monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    recorder = Recorder()
    middleware: list[Middleware] = [recorder]
    if stage == "around_handler":
        middleware.append(RaisingMiddleware("target"))
    app = make_app(middleware=middleware)
    q = app.queue("email", visibility_timeout=0.5, max_attempts=2, backoff_base=0.01,
                  backoff_cap=0.02)
    handled: list[Any] = []

    @q.handler(concurrency=1)  # a leaked slot would stop everything behind the target
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)
        if msg.payload == "target" and stage in ("retry_decision", "retry_settle",
                                                 "dead_letter_settle"):
            raise ConnectionError("provider down")

    _inject(stage, monkeypatch)
    await q.publish("target")
    await q.publish_many(["a", "b", "c"])
    expected = STAGES[stage]
    async with app.worker() as worker:
        await recorder.wait_for(lambda: {"a", "b", "c"} <= set(handled))
        if expected is None:
            await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED] == 4)
        else:
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
        # Nothing left running or held: every slot and lease was given back.
        await recorder.wait_for(lambda: worker.running == 0 and not worker.runners[0].in_flight)
    assert [handled.count(p) for p in "abc"] == [1, 1, 1]
    assert await _settled(q, dead=0 if expected is None else 1)
    if expected is not None:
        [dead] = await q.dlq.list()
        assert (dead.message_id, dead.reason) == ((await q.dlq.list())[0].message_id, expected)
        assert dead.message is None or dead.message.payload == "target"


def _inject(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``stage`` raise once (decode: always) for the message with payload "target"."""
    import tidings.worker.runner as runner_module
    import tidings.worker.settle as settle_module
    from tidings.core.middleware import MiddlewareChain as EventBus

    fired: list[str] = []

    def first_time() -> bool:
        if fired:
            return False
        fired.append(stage)
        return True

    if stage == "decode":
        real_decode = runner_module.decode

        def decode(raw: bytes) -> Message:
            msg = real_decode(raw)
            if msg.payload == "target":
                raise RuntimeError("decoder bug")
            return msg

        monkeypatch.setattr(runner_module, "decode", decode)
    elif stage == "delivered_event":
        real_event = EventBus.message_event

        def message_event(bus: EventBus, kind: EventKind, message: Message,
                          **extra: Any) -> None:
            if kind is EventKind.DELIVERED and message.payload == "target" and first_time():
                raise RuntimeError("event bus bug")
            real_event(bus, kind, message, **extra)

        monkeypatch.setattr(EventBus, "message_event", message_event)
    elif stage == "retry_decision":
        real_decide = settle_module.decide

        def decide(message: Message, error: BaseException, policy: Any, clock: Any) -> Any:
            if message.payload == "target" and first_time():
                raise ValueError("retry policy bug")
            return real_decide(message, error, policy, clock)

        monkeypatch.setattr(settle_module, "decide", decide)
    elif stage in ("retry_settle", "dead_letter_settle", "ack_settle"):
        name = stage.removesuffix("_settle")
        script = name.upper()
        real = getattr(queue_scripts, script)

        async def failing(client: Any, keys: Any, args: Any) -> Any:
            if first_time():
                raise RuntimeError(f"{name} script bug")
            return await real(client, keys, args)

        monkeypatch.setattr(queue_scripts, script, failing)


# -- handler_timeout: a hung handler cannot hold its message for ever ----------------------


def test_handler_timeout_has_a_safe_default_and_none_means_no_limit() -> None:
    from tidings.core.config import DEFAULT_HANDLER_TIMEOUT, build_queue_config

    assert build_queue_config("q").handler_timeout == DEFAULT_HANDLER_TIMEOUT == 300
    assert build_queue_config("q", handler_timeout=None).handler_timeout is None
    # Not tied to the lease any more: a short lease with a long handler limit is fine.
    assert build_queue_config("q", visibility_timeout=2, handler_timeout=60).handler_timeout == 60


async def test_a_hung_async_handler_is_cancelled_reported_and_retried(
        app: Tidings, recorder: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    q = app.queue("webhook", handler_timeout=0.1, max_attempts=2, backoff_base=0.01)
    calls: list[int] = []

    @q.handler
    async def handle(msg: Message) -> None:
        calls.append(msg.attempts)
        if msg.attempts == 0:
            await asyncio.Event().wait()  # hangs for ever

    await q.publish("x")
    with caplog.at_level("WARNING", logger="tidings.worker"):
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 1)
    assert calls == [0, 1]
    [retried] = recorder.of(EventKind.RETRIED)
    assert retried.error is not None and retried.error.startswith("HandlerTimeoutError")
    assert any("ran past handler_timeout" in r.getMessage() for r in caplog.records)


async def test_a_hung_sync_handler_frees_its_slot_at_the_timeout(
        app: Tidings, recorder: Recorder) -> None:
    import threading

    q = app.queue("webhook", handler_timeout=0.1, max_attempts=1)
    release = threading.Event()
    handled: list[Any] = []

    @q.handler(concurrency=2)
    def handle(msg: Message) -> None:
        if msg.payload == "hang":
            release.wait(30)  # a thread cannot be cancelled: it runs on, ignored
        handled.append(msg.payload)

    await q.publish("hang")
    await q.publish_many(["a", "b"])
    try:
        async with app.worker():
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
            await recorder.wait_count(EventKind.ACKED, 2)
    finally:
        release.set()
    [dead] = await q.dlq.list()
    assert dead.error["type"] == "HandlerTimeoutError" and sorted(handled[:2]) == ["a", "b"]


@pytest.mark.parametrize("body", [b"no separators", b"x|1|envelope", b"7||envelope",
                                  b"1|soon|envelope", b""])
async def test_a_malformed_delayed_body_is_dead_lettered_and_does_not_stop_fetching(
        app: Tidings, recorder: Recorder, body: bytes) -> None:
    q = app.queue("email")
    handled: list[Any] = []

    @q.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    await app.connect()
    client = app.broker.client
    await client.hset(q.keys.delayed_bodies, "bad-body", body)
    await client.zadd(q.keys.delayed, {"bad-body": 0})  # due long ago
    await q.publish("after")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    assert handled == ["after"]
    [dead] = await q.dlq.list()
    assert (dead.message_id, dead.reason) == ("bad-body", "undecodable")
    assert await _settled(q, dead=1)


async def test_moving_the_app_clock_times_a_hung_handler_out_without_waiting(
        make_app: Callable[..., Tidings]) -> None:
    from tidings.core.clock import ManualClock

    clock = ManualClock()
    recorder = Recorder()
    app = make_app(middleware=[recorder], clock=clock)
    q = app.queue("webhook", handler_timeout=3600, max_attempts=1)

    @q.handler
    async def handle(msg: Message) -> None:
        await asyncio.Event().wait()  # hangs for ever

    await q.publish("x")
    async with app.worker():
        await recorder.wait_count(EventKind.DELIVERED, 1)
        clock.advance(3601)  # an hour passes, on the app's clock only
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1, timeout=5)
    [dead] = await q.dlq.list()
    assert dead.error["type"] == "HandlerTimeoutError"
