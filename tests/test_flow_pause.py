"""Pausing and resuming a queue, or one key of it, from Python and from the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from conftest import Recorder, collect_payloads, held_by_dead_consumer, tidings, with_app
from flow_helpers import wait_until
from tidings import EventKind, Message, Tidings
from tidings.flow import pause_queue, resume_queue
from tidings.ordering.queue import meta_key


async def test_paused_queue_keeps_its_messages_on_every_worker(
        make_app: Callable[..., Tidings]) -> None:
    recorders = [Recorder(), Recorder()]
    apps = [make_app(middleware=[r]) for r in recorders]
    handled: list[int] = []
    for app in apps:
        q = app.queue("email")  # no app.flow: every worker obeys a pause anyway

        @q.handler
        async def handle(msg: Message) -> None:
            handled.append(msg.payload)

    email = apps[0].queue("email")
    async with apps[0], apps[1].worker(), apps[0].worker():
        await pause_queue(email)
        assert (await apps[1].flow.pause_state("email")).paused
        await asyncio.sleep(1.2)  # every worker's cached view has expired by now
        await email.publish_many(range(10))
        await asyncio.sleep(1.0)
        assert handled == []
        stats = await email.stats()
        assert (stats.depth, stats.delayed, stats.in_flight) == (10, 0, 0)
        await resume_queue(email)
        await wait_until(lambda: len(handled) == 10, timeout=5)
    assert sorted(handled) == list(range(10))
    assert sum(r.counts[EventKind.SNOOZED] + r.counts[EventKind.RETRIED] for r in recorders) == 0


async def test_paused_queue_does_not_reclaim_a_dead_consumers_messages(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    app = make_app(middleware=[recorder])
    q = app.queue("email", visibility_timeout=0.3)
    handled = collect_payloads(q)
    await held_by_dead_consumer(q, 3)
    await pause_queue(q)
    async with app.worker() as worker:
        runner, rounds = worker.runners[0], 0
        reclaim = runner.reclaim

        async def counted() -> None:
            nonlocal rounds
            await reclaim()
            rounds += 1

        runner.reclaim = counted  # type: ignore[method-assign]
        await wait_until(lambda: rounds >= 3)  # three reclaim rounds met the paused gate
        assert handled == []
        assert (await q.stats()).in_flight == 3
        await resume_queue(q)
        await recorder.wait_count(EventKind.ACKED, 3)
    assert sorted(handled) == [0, 1, 2]


async def test_pause_lets_running_handlers_finish(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    release = asyncio.Event()
    started: list[int] = []

    @q.handler(concurrency=2)
    async def handle(msg: Message) -> None:
        started.append(msg.payload)
        await release.wait()

    await app.flow.resume(q)  # connects; nothing to resume
    async with app.worker():
        await q.publish_many([1, 2])
        await wait_until(lambda: len(started) == 2)
        await app.flow.pause(q)
        await asyncio.sleep(1.1)
        await q.publish_many([3, 4])
        release.set()
        await recorder.wait_count(EventKind.ACKED, 2)
        await asyncio.sleep(0.5)
        assert sorted(started) == [1, 2]
        await app.flow.resume(q)
        await recorder.wait_count(EventKind.ACKED, 4)


async def test_paused_key_is_parked_and_resumes_at_once(app: Tidings,
                                                        recorder: Recorder) -> None:
    q = app.queue("email")
    app.flow.pausable(q, key=lambda m: m.payload["tenant"], snooze=30.0)
    handled: list[str] = []

    @q.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload["tenant"])

    await app.flow.pause(q, key="acme")
    state = await app.flow.pause_state(q)
    assert (state.paused, state.keys) == (False, ["acme"])
    await q.publish_many([{"tenant": t} for t in ("acme", "beta", "acme", "beta", "acme")])
    async with app.worker():
        await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED] == 2
                                and recorder.counts[EventKind.SNOOZED] == 3)
        assert handled == ["beta", "beta"]
        parked = recorder.of(EventKind.SNOOZED)
        assert all(e.delay == 30.0 and e.attempt == 0 for e in parked)
        assert await app.flow.resume(q, key="acme") == 3
        await recorder.wait_count(EventKind.ACKED, 5, timeout=3)  # not 30 s
    assert handled.count("acme") == 3
    assert recorder.counts[EventKind.RETRIED] == 0
    assert (await app.flow.pause_state(q)).keys == []


async def test_a_parked_message_waits_longer_each_time(app: Tidings,
                                                       recorder: Recorder) -> None:
    q = app.queue("email")
    app.flow.pausable(q, key=lambda m: m.payload, snooze=0.05, max_snooze=0.15)

    @q.handler
    async def handle(msg: Message) -> None:
        pass

    await app.flow.pause(q, key="k")
    await q.publish("k")
    async with app.worker():
        await recorder.wait_count(EventKind.SNOOZED, 4)
    delays = [e.delay for e in recorder.of(EventKind.SNOOZED)][:4]
    assert delays == [0.05, 0.1, 0.15, 0.15]


def test_cli_pause_and_resume(cli_env: dict[str, str]) -> None:
    env = cli_env

    async def declare(app: Tidings) -> None:  # a producer of email connected once
        await app.broker.client.hset(meta_key(app.settings.key_prefix, "orders"),
                                     "partitions", 4)

    with_app(env, declare, "email")

    def invoke(*args: str) -> str:
        return str(tidings(env, *args).stdout)

    assert invoke("pause", "email").strip() == "paused email"
    assert invoke("pause", "email", "--key", "acme").strip() == "paused email key acme"
    state = orjson.loads(invoke("paused", "email", "--json"))
    assert state == {"queue": "email", "paused": True, "keys": ["acme"]}
    assert "resumed email" in invoke("resume", "email")
    assert "0 parked" in invoke("resume", "email", "--key", "acme")
    assert orjson.loads(invoke("paused", "email", "--json"))["paused"] is False
    assert "running" in invoke("paused", "email")
    keyed = tidings(env, "pause", "email", "--key", "acme")
    assert "app.flow.pausable('email'" in keyed.stderr  # only those workers obey it
    refused = tidings(env, "pause", "orders", code=2)
    assert "ordered queue" in refused.stderr
