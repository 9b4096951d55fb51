"""Circuit breakers wired into workers: fetch gate, probes, events, shared state, CLI.

Two apps on one key prefix stand for two worker processes; they share a fake clock, so
no test sleeps through an open period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from typer.testing import CliRunner

from conftest import Recorder, new_prefix
from flow_helpers import FakeClock, wait_until
from tidings import DeadLetter, EventKind, Message, Retry, Snooze, Tidings
from tidings.cli.main import cli
from tidings.flow import CircuitState


class Downstream:
    """What the handlers call: fails while ``up`` is False; records what it served."""

    def __init__(self) -> None:
        self.up = False
        self.served: list[tuple[Any, int, int]] = []  # payload, attempts, app index
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def send(self, msg: Message, app_index: int) -> None:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if not self.up:
                raise ConnectionError("smtp down")
            self.served.append((msg.payload, msg.attempts, app_index))
        finally:
            self.in_flight -= 1


def two_workers(make_app: Callable[..., Tidings], clock: FakeClock, downstream: Downstream,
                **breaker: Any) -> tuple[list[Tidings], list[Recorder]]:
    recorders = [Recorder(), Recorder()]
    apps = [make_app(middleware=[r]) for r in recorders]
    for index, app in enumerate(apps):
        email = app.queue("email", max_attempts=50, backoff_base=0.01, backoff_cap=0.02)
        breaker.setdefault("failure_threshold", 3)
        app.flow.breaker("smtp", open_for=30, clock=clock, **breaker).protect(email)

        async def handle(msg: Message, index: int = index) -> None:
            await downstream.send(msg, index)

        email.handler(concurrency=4)(handle)
    return apps, recorders


def total(recorders: list[Recorder], kind: EventKind) -> int:
    return sum(r.counts[kind] for r in recorders)


async def test_open_breaker_holds_messages_without_spending_attempts(
        make_app: Callable[..., Tidings]) -> None:
    clock, downstream = FakeClock(), Downstream()
    apps, recorders = two_workers(make_app, clock, downstream)
    email = apps[0].queue("email")
    async with apps[0].worker(), apps[1].worker():
        await email.publish_many(["bad-1", "bad-2", "bad-3"])
        await wait_until(lambda: total(recorders, EventKind.BREAKER_OPENED) == 1)
        await asyncio.sleep(0.5)  # longer than check_every: both workers know it is open
        calls = downstream.calls
        ids = await email.publish_many([f"m{i}" for i in range(20)])
        await asyncio.sleep(1.0)
        assert downstream.calls == calls  # nothing was taken while open
        for msg_id in ids:
            info = await email.inspect(msg_id)
            assert info is not None and info.state == "queued"
            assert info.message is not None and info.message.attempts == 0
        state = await apps[1].flow.breaker("smtp").status()
        assert state.state is CircuitState.OPEN
        downstream.up = True
        clock.advance(31)  # open_for is over: the next fetch probes
        await wait_until(lambda: len(downstream.served) == 23)
        guards = [app.flow.breaker("smtp") for app in apps]
        await wait_until(lambda: all(g.state is CircuitState.CLOSED for g in guards))
    served = {payload: attempts for payload, attempts, _ in downstream.served}
    assert all(served[f"m{i}"] == 0 for i in range(20))  # processed after it closed, no attempt
    assert total(recorders, EventKind.BREAKER_OPENED) == 1
    assert total(recorders, EventKind.BREAKER_HALF_OPEN) == 1
    assert total(recorders, EventKind.BREAKER_CLOSED) == 1
    [opened] = [e for r in recorders for e in r.of(EventKind.BREAKER_OPENED)]
    assert opened.reason == "breaker smtp: closed -> open" and opened.queue == "email"
    assert opened.message_id  # the failure that tripped it
    assert total(recorders, EventKind.RETRIED) >= 3
    assert not [e for r in recorders for e in r.of(EventKind.RETRIED)
                if e.message is not None and str(e.message.payload).startswith("m")]


async def test_failed_probe_reopens_and_costs_one_attempt(
        make_app: Callable[..., Tidings]) -> None:
    clock, downstream = FakeClock(), Downstream()
    apps, recorders = two_workers(make_app, clock, downstream, failure_threshold=1)
    email = apps[0].queue("email")
    async with apps[0].worker(), apps[1].worker():
        await email.publish("bad")
        await wait_until(lambda: total(recorders, EventKind.BREAKER_OPENED) == 1)
        await asyncio.sleep(0.5)
        ids = await email.publish_many([f"m{i}" for i in range(10)])
        calls = downstream.calls
        clock.advance(31)
        await wait_until(lambda: total(recorders, EventKind.BREAKER_OPENED) == 2)
        assert downstream.calls == calls + 1  # one probe, no more
        assert downstream.max_in_flight == 1
        await asyncio.sleep(0.5)
        assert downstream.calls == calls + 1  # reopened: nothing else taken
    assert total(recorders, EventKind.BREAKER_HALF_OPEN) == 1
    infos = [await email.inspect(msg_id) for msg_id in ids]
    attempts = sorted(i.message.attempts for i in infos if i is not None and i.message)
    assert len(attempts) == 10 and attempts[:9] == [0] * 9  # at most the probe spent one


async def test_what_counts_as_a_failure(app: Tidings, recorder: Recorder) -> None:
    email = app.queue("email", max_attempts=1)
    guard = app.flow.breaker("smtp", failure_threshold=100,
                             is_failure=lambda exc: not isinstance(exc, ValueError))
    guard.protect(email)
    snoozed: set[str] = set()

    @email.handler
    async def handle(msg: Message) -> None:
        kind = msg.payload
        if kind == "snooze" and msg.id not in snoozed:
            snoozed.add(msg.id)
            raise Snooze(0.01)
        if kind == "dead":
            raise DeadLetter("bad payload")
        if kind == "retry":
            raise Retry(0.01)
        if kind == "value":
            raise ValueError("our bug, not the downstream's")
        if kind == "down":
            raise ConnectionError("down")

    for kind in ("ok", "snooze", "dead", "retry", "value", "down"):
        await email.publish(kind)
    async with app.worker():
        await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED] == 2
                                and recorder.counts[EventKind.DEAD_LETTERED] == 4)
    state = await guard.status()
    # ok + snoozed-then-ok + value (not a downstream failure): 3 successes;
    # retry + down: 2 failures; the snooze and the DeadLetter count for nothing.
    assert (state.calls, state.failures) == (5, 2)


async def test_batch_handlers_record_one_call(app: Tidings, recorder: Recorder) -> None:
    email = app.queue("email")
    guard = app.flow.breaker("smtp", failure_threshold=100).protect(email)

    @email.handler(batch_size=10, batch_wait=0.05)
    async def handle(batch: list[Message]) -> None:
        batch[0].fail(ConnectionError("one failed"))

    await email.publish_many(range(5))
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 4)
    state = await guard.status()
    assert (state.calls, state.failures) == (1, 1)


async def test_same_name_is_one_breaker_over_several_queues(app: Tidings) -> None:
    email, sms = app.queue("email"), app.queue("sms")
    first = app.flow.breaker("provider").protect(email)
    assert app.flow.breaker("provider").protect(sms) is first
    assert first.queues == ["email", "sms"]
    assert app.flow.gate(email) is not app.flow.gate(sms)  # one flow gate per queue
    assert first in app.flow.gate(email).guards and first in app.flow.gate(sms).guards
    await app.connect()
    await first.reset()
    assert (await first.status()).state is CircuitState.CLOSED


def test_cli_lists_breakers_and_resets(redis_url: str) -> None:
    prefix = new_prefix()
    env = {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": prefix}
    app = Tidings(redis_url, key_prefix=prefix)
    email = app.queue("email")
    guard = app.flow.breaker("smtp", failure_threshold=1).protect(email)
    guard.protect(app.queue("sms"))
    email.handler(lambda msg: None)

    async def setup() -> None:
        async with app:
            async with app.worker():  # workers register their breakers for the CLI
                await asyncio.sleep(0.1)
            await guard._record(False, "email", Message("m1", "email", None))

    asyncio.run(setup())
    runner = CliRunner()
    result = runner.invoke(cli, ["breakers", "--json"], env=env)
    assert result.exit_code == 0, result.output
    [row] = orjson.loads(result.stdout)
    assert row["name"] == "smtp" and row["state"] == "open" and row["failures"] == 1
    assert row["queues"] == ["email", "sms"] and row["opened_at"] and row["next_probe_at"]
    assert row["config"]["failure_threshold"] == 1
    table = runner.invoke(cli, ["breakers"], env=env)
    assert table.exit_code == 0 and "smtp" in table.stdout and "open" in table.stdout
    result = runner.invoke(cli, ["breakers", "--json", "--reset", "smtp"], env=env)
    assert result.exit_code == 0, result.output
    assert [r["state"] for r in orjson.loads(result.stdout)] == ["closed"]

    async def cleanup() -> None:
        async with app:
            client = app.broker.client
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)

    asyncio.run(cleanup())
