"""Ordered queues in one process: per-key order, failure policies, ownership, operators."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from conftest import Recorder
from flow_helpers import wait_until
from tidings import EventKind, Message, Retry, Snooze, Tidings
from tidings.core.errors import ConfigError, ValidationError
from tidings.ordering.assignment import assign
from tidings.ordering.queue import OrderedQueue
from tidings.ordering.worker import OrderedWorker
from tidings.security.audit import Audit


class Log:
    """What the handlers saw: per key, the sequence numbers started and finished."""

    def __init__(self) -> None:
        self.started: dict[str, list[int]] = defaultdict(list)
        self.done: dict[str, list[int]] = defaultdict(list)
        self.running: dict[str, int] = defaultdict(int)
        self.overlaps = 0
        self.peak = 0
        self.now = 0

    async def handle(self, msg: Message, pause: float = 0.004) -> None:
        key, seq = msg.headers["ordering_key"], msg.payload["seq"]
        self.started[key].append(seq)
        self.running[key] += 1
        self.now += 1
        self.peak = max(self.peak, self.now)
        if self.running[key] > 1:
            self.overlaps += 1
        try:
            await asyncio.sleep(random.random() * pause)
        finally:
            self.running[key] -= 1
            self.now -= 1
        self.done[key].append(seq)

    def count(self) -> int:
        return sum(len(v) for v in self.done.values())


def ordered(app: Tidings, log: Log, **options: Any) -> OrderedQueue:
    options.setdefault("partitions", 8)
    options.setdefault("lease", 2.0)
    q = OrderedQueue(app, "orders", **options)
    q.handler(concurrency=16)(log.handle)
    return q


def test_assignment_is_balanced_and_stable() -> None:
    three = assign(["a", "b", "c"], 16)
    assert sorted(len(v) for v in three.values()) == [5, 5, 6]
    assert set().union(*three.values()) == set(range(16))
    four = assign(["a", "b", "c", "d"], 16)
    moved = sum(len(three[m] - four[m]) for m in three)
    assert all(len(v) == 4 for v in four.values()) and moved <= 6  # few partitions move


async def test_each_key_runs_in_order_one_at_a_time(app: Tidings) -> None:
    log = Log()
    q = ordered(app, log)
    keys = [f"user-{i}" for i in range(12)]
    await q.publish_many([(key, {"seq": n}) for n in range(25) for key in keys])
    async with OrderedWorker(app, [q]):
        await wait_until(lambda: log.count() == 300)
    for key in keys:
        assert log.started[key] == list(range(25)) == log.done[key]
    assert log.overlaps == 0 and log.peak > 1  # keys ran concurrently, never a key twice
    stats = await q.stats()
    assert (stats.ready, stats.active, stats.blocked) == (0, 0, 0)
    assert stats.counters["published"] == stats.counters["acked"] == 300
    assert await q.pending("user-1") == 0


async def test_retry_in_place_holds_the_key_not_the_others(app: Tidings,
                                                           recorder: Recorder) -> None:
    q = OrderedQueue(app, "orders", partitions=1, max_attempts=5, lease=2.0)
    seen: list[tuple[str, int, int]] = []

    @q.handler(concurrency=4)
    async def handle(msg: Message) -> None:
        key, seq = msg.headers["ordering_key"], msg.payload
        seen.append((key, seq, msg.attempts))
        if key == "a" and seq == 0 and msg.attempts < 2:
            raise Retry(0.3)

    await q.publish_many([("a", 0), ("a", 1), ("b", 0), ("b", 1)])
    async with OrderedWorker(app, [q]):
        await recorder.wait_count(EventKind.RETRIED, 1)
        [blocked] = await q.blocked_keys()
        assert (blocked.key, blocked.state, blocked.attempts, blocked.waiting) == (
            "a", "retrying", 1, 1)
        await wait_until(lambda: [s for s in seen if s[0] == "b"] == [("b", 0, 0), ("b", 1, 0)])
        assert ("a", 1, 0) not in seen
        await recorder.wait_count(EventKind.ACKED, 4)
    assert [s for s in seen if s[0] == "a"] == [("a", 0, 0), ("a", 0, 1), ("a", 0, 2),
                                                ("a", 1, 0)]
    assert await q.blocked_keys() == []


async def test_block_policy_holds_the_key_for_an_operator(app: Tidings,
                                                          recorder: Recorder) -> None:
    q = OrderedQueue(app, "orders", partitions=2, max_attempts=2, on_failure="block",
                     lease=2.0)
    q.retry = q.retry.model_copy(update={"base": 0.01, "cap": 0.02})
    seen: list[tuple[int, int]] = []
    fixed = False

    @q.handler
    async def handle(msg: Message) -> None:
        seen.append((msg.payload, msg.attempts))
        if msg.payload == 0 and not fixed:
            raise ConnectionError("ledger down")

    await q.publish_many([("acct", 0), ("acct", 1), ("acct", 2)])
    async with OrderedWorker(app, [q]):
        await wait_until(lambda: len(seen) == 2)
        await asyncio.sleep(0.3)
        [key] = await q.blocked_keys()
        assert (key.state, key.attempts, key.waiting, key.next_at) == ("blocked", 2, 2, None)
        assert "ledger down" in key.error and seen == [(0, 0), (0, 1)]
        fixed = True
        assert await q.retry_key("acct")
        await wait_until(lambda: len(seen) == 5)
    assert seen[2:] == [(0, 0), (1, 0), (2, 0)]  # fresh attempts, then the rest in order
    assert not await q.retry_key("acct")  # nothing blocked any more


async def test_a_message_s_own_max_attempts_overrides_the_ordered_queue_s(
        app: Tidings, recorder: Recorder) -> None:
    # The same retry decision as plain queues: the message's max_attempts wins.
    q = OrderedQueue(app, "orders", partitions=1, max_attempts=10, on_failure="dead_letter",
                     lease=2.0)
    q.retry = q.retry.model_copy(update={"base": 0.01, "cap": 0.02})
    attempts: list[int] = []

    @q.handler
    async def handle(msg: Message) -> None:
        attempts.append(msg.attempts)
        raise ConnectionError("ledger down")

    await q.publish(0, key="acct", max_attempts=2)
    async with OrderedWorker(app, [q]):
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    assert attempts == [0, 1]  # two attempts, not the queue's ten
    [dead] = await q.dead_letters()
    assert dead["reason"] == "max_attempts"


async def test_skip_dead_letters_the_head_and_the_key_goes_on(app: Tidings) -> None:
    q = OrderedQueue(app, "orders", partitions=2, max_attempts=1, on_failure="block",
                     lease=2.0)
    seen: list[int] = []

    @q.handler
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)
        if msg.payload == 0:
            raise ValueError("bad")

    await q.publish_many([("k", 0), ("k", 1)])
    async with OrderedWorker(app, [q]):
        await wait_until(lambda: seen == [0])
        await asyncio.sleep(0.2)
        assert await q.skip_key("k")
        await wait_until(lambda: seen == [0, 1])
    [dead] = await q.dead_letters()
    assert dead["key"] == "k" and dead["message"].payload == 0
    assert dead["reason"] == "skipped by operator"


async def test_dead_letter_policy_moves_on(app: Tidings, recorder: Recorder) -> None:
    q = OrderedQueue(app, "orders", partitions=2, max_attempts=2, on_failure="dead_letter",
                     lease=2.0)
    q.retry = q.retry.model_copy(update={"base": 0.01, "cap": 0.02})
    seen: list[int] = []

    @q.handler
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)
        if msg.payload == 1:
            raise RuntimeError("poison pill")

    await q.publish_many([("k", 0), ("k", 1), ("k", 3)])
    async with OrderedWorker(app, [q]):
        await recorder.wait_count(EventKind.ACKED, 2)
    assert seen == [0, 1, 1, 3]
    [dead] = await q.dead_letters()
    assert dead["reason"] == "max_attempts" and dead["message"].attempts == 2
    assert "poison pill" in dead["error"]
    assert recorder.counts[EventKind.DEAD_LETTERED] == 1


async def test_dead_letters_replay_to_the_end_of_their_key_and_purge(
        app: Tidings, recorder: Recorder) -> None:
    q = OrderedQueue(app, "orders", partitions=2, max_attempts=1, on_failure="dead_letter")
    healed = False
    seen: list[tuple[str, int]] = []

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload == 1 and not healed:
            raise RuntimeError("provider down")
        seen.append((msg.headers["ordering_key"], msg.payload))

    await q.publish_many([("a", 0), ("a", 1), ("a", 2), ("b", 1)])
    async with OrderedWorker(app, [q]):
        await recorder.wait_count(EventKind.DEAD_LETTERED, 2)
        await recorder.wait_count(EventKind.ACKED, 2)
        healed = True
        assert await q.replay_dead_letters(key="a") == 1
        assert await q.replay_dead_letters(key="a") == 0  # never enqueued twice
        await recorder.wait_count(EventKind.ACKED, 3)
    assert seen == [("a", 0), ("a", 2), ("a", 1)]  # after the key's later message
    [left] = await q.dead_letters()
    assert left["key"] == "b"
    assert await q.purge_dead_letters() == 1
    assert await q.dead_letters() == [] and await q.pending("b") == 0


async def test_snooze_waits_without_spending_an_attempt(app: Tidings) -> None:
    q = OrderedQueue(app, "orders", partitions=1, lease=2.0)
    seen: list[tuple[int, int]] = []

    @q.handler
    async def handle(msg: Message) -> None:
        seen.append((msg.payload, msg.attempts))
        if msg.payload == 0 and len(seen) == 1:
            raise Snooze(0.1)

    await q.publish_many([("k", 0), ("k", 1)])
    async with OrderedWorker(app, [q]):
        await wait_until(lambda: len(seen) == 3)
    assert seen == [(0, 0), (0, 0), (1, 0)]


async def live_owners(q: OrderedQueue, count: int, timeout: float = 10.0) -> None:
    """Until ``count`` workers own partitions and none is unowned."""
    for _ in range(int(timeout / 0.05)):
        owners = (await q.stats()).owners.values()
        if "" not in owners and len(set(owners)) == count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"owners: {sorted(owners)}")


async def test_partitions_move_between_workers_without_breaking_order(
        make_app: Callable[..., Tidings]) -> None:
    log = Log()
    apps = [make_app() for _ in range(3)]
    queues = [ordered(app, log, lease=1.0) for app in apps]
    keys = [f"k{i}" for i in range(20)]
    sent = 0

    async def publish(rounds: int) -> None:
        nonlocal sent
        for _ in range(rounds):
            await queues[0].publish_many([(key, {"seq": sent}) for key in keys])
            sent += 1
            await asyncio.sleep(0.01)

    async with OrderedWorker(apps[0], [queues[0]]):
        await publish(20)
        await live_owners(queues[0], 1)
        async with OrderedWorker(apps[1], [queues[1]]):  # joins: partitions are handed over
            await publish(20)
            await live_owners(queues[0], 2)
            async with OrderedWorker(apps[2], [queues[2]]):
                await publish(20)
                await live_owners(queues[0], 3)
            await publish(10)  # one left: its partitions were handed back
        await publish(10)
        await live_owners(queues[0], 1)
        await wait_until(lambda: log.count() == 80 * len(keys))
    for key in keys:
        assert log.done[key] == list(range(80))
    assert log.overlaps == 0


async def test_a_different_partition_count_is_refused(app: Tidings) -> None:
    await OrderedQueue(app, "orders", partitions=4).ensure_ready()
    with pytest.raises(ConfigError):
        await OrderedQueue(app, "orders", partitions=8).ensure_ready()
    with pytest.raises(ValidationError):
        OrderedQueue(app, "bad{name}")


async def test_runs_inside_the_regular_worker(app: Tidings) -> None:
    log = Log()
    q = ordered(app, log)
    plain = app.queue("plain")
    plain.handler(lambda msg: None)
    await q.publish_many([("a", {"seq": n}) for n in range(10)])
    async with app.worker():
        await wait_until(lambda: log.count() == 10)
    assert log.done["a"] == list(range(10))


async def test_worker_stops_when_a_heartbeat_swallows_its_cancellation(
        app: Tidings, monkeypatch: pytest.MonkeyPatch) -> None:
    # On Python 3.11 redis-py sends each command under asyncio.wait_for, which drops a
    # cancellation that arrives as the write completes: a loop stopped only by cancel()
    # then runs for ever, and the worker never stops.
    from tidings.ordering.runner import OrderedRunner

    q = ordered(app, Log())
    in_flight, gave_up = asyncio.Event(), asyncio.Event()
    real = OrderedRunner._heartbeat
    calls = 0

    async def heartbeat(self: OrderedRunner) -> None:
        nonlocal calls
        if gave_up.is_set():
            raise RuntimeError("the test gave up on this worker")  # ends a looping heartbeat
        await real(self)
        calls += 1
        if calls == 2:  # the first beat of the heartbeat loop (run() makes the first call)
            in_flight.set()
            try:
                await gave_up.wait()  # a command on the wire when the stop comes
            except asyncio.CancelledError:
                pass  # what redis-py's wait_for does with it on 3.11

    monkeypatch.setattr(OrderedRunner, "_heartbeat", heartbeat)
    worker = OrderedWorker(app, [q])
    task = asyncio.ensure_future(worker.run())
    await in_flight.wait()
    worker.stop()
    done, _ = await asyncio.wait([task], timeout=10)
    gave_up.set()
    await task
    assert done, "the worker did not stop"


def test_cli_shows_and_unblocks_keys(redis_url: str) -> None:
    from typer.testing import CliRunner

    from conftest import new_prefix
    from tidings.cli.main import cli

    prefix = new_prefix()
    env = {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": prefix}
    recorder = Recorder()
    app = Tidings(redis_url, key_prefix=prefix, middleware=[recorder])
    q = OrderedQueue(app, "ledger", partitions=4, max_attempts=1, lease=2.0)
    seen: list[int] = []

    @q.handler
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)
        if msg.payload == 0:
            raise ValueError("bad entry")

    async def block() -> None:
        async with app:
            await q.publish_many([("acct-1", 0), ("acct-1", 1)])
            async with OrderedWorker(app, [q]):
                await recorder.wait_count(EventKind.RETRIED, 1)  # the key's hold is settled

    asyncio.run(block())
    assert seen == [0]
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, ["ordered", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    [row] = orjson.loads(invoke("blocked", "ledger", "--json"))
    assert (row["key"], row["state"], row["attempts"], row["waiting"]) == ("acct-1", "blocked",
                                                                           1, 1)
    assert "ValueError: bad entry" in row["error"]
    assert "acct-1" in invoke("blocked", "ledger")
    status = orjson.loads(invoke("status", "ledger", "--json"))
    assert status["partitions"] == 4 and status["blocked"] == 1
    assert "skipped" in invoke("skip", "ledger", "acct-1")
    assert runner.invoke(cli, ["ordered", "retry", "ledger", "acct-1"], env=env).exit_code == 1
    assert orjson.loads(invoke("blocked", "ledger", "--json")) == []
    [dead] = orjson.loads(invoke("dlq", "ledger", "--json"))
    assert (dead["key"], dead["attempts"]) == ("acct-1", 1)
    assert "acct-1" in invoke("dlq", "ledger")
    nothing = runner.invoke(cli, ["ordered", "replay", "ledger", "--key", "acct-2"], env=env)
    assert (nothing.exit_code, nothing.stdout.strip()) == (1, "replayed 0")  # nothing done
    assert invoke("purge", "ledger", "--yes").strip() == "purged 1"
    assert orjson.loads(invoke("dlq", "ledger", "--json")) == []

    async def finish() -> list[tuple[str, str, Any]]:
        async with app:
            async with OrderedWorker(app, [q]):
                await wait_until(lambda: seen == [0, 1])
            audit = [(e.action, e.outcome, e.detail.get("count"))
                     for e in await app.extension(Audit).entries()]
            keys = [k async for k in app.broker.client.scan_iter(match=f"{prefix}:*")]
            await app.broker.client.delete(*keys)
        return audit

    # Each unblocking command is an authorised operation with its outcome in the audit.
    assert [(action, outcome, count) for action, outcome, count in asyncio.run(finish())
            if outcome != "allowed"] == [("ordered.skip", "done", None),
                                         ("ordered.retry", "failed", None),
                                         ("ordered.replay", "done", 0),
                                         ("ordered.purge", "done", 1)]
