"""Rule changes reach other processes without a restart, and a rule change under load
never splits, loses or doubles a message (real producer processes)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import orjson
import pytest

from fault_helpers import ROOT, poll
from tidings import Tidings
from tidings.core.message import decode


async def spawn(app: Tidings, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "TIDINGS_REDIS_URL": app.broker.url or "",
           "TIDINGS_KEY_PREFIX": app.settings.key_prefix, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.apps.routing_app", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "the producer process ended"
    return line.decode().strip()


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_another_process_picks_up_every_change_without_publishing(
        make_app: Callable[..., Tidings], processes: list[Any]) -> None:
    app = make_app()
    async with app:
        await app.topics.rules()  # connected
        follower = await spawn(app, "follow")
        processes.append(follower)
        assert await read_line(follower) == "version 0"
        lags = []
        for n in range(1, 6):
            saved = time.perf_counter()
            await app.topics.bind(f"b{n}", "order.*", f"q{n}")
            assert await read_line(follower) == f"version {n}"
            lags.append(time.perf_counter() - saved)
        print(f"propagation to another process: max {max(lags) * 1000:.1f} ms")


async def queue_contents(app: Tidings, names: list[str]) -> Counter[tuple[str, str]]:
    """(origin id, queue) of every copy in those queues' lanes."""
    found: Counter[tuple[str, str]] = Counter()
    for name in names:
        for lane in app.key_space.queue(name).lanes:
            for _, fields in await app.broker.client.xrange(lane):
                found[(decode(fields[b"m"]).headers["tidings-origin"], name)] += 1
    return found


async def test_rule_changes_under_load_route_each_message_whole_by_one_version(
        make_app: Callable[..., Tidings], processes: list[Any]) -> None:
    app = make_app()
    count = 1000
    async with app:
        await app.topics.bind("a", "order.*", "a")
        producers = [await spawn(app, "publish", str(count)) for _ in range(2)]
        processes.extend(producers)
        for proc in producers:
            assert await read_line(proc) == "publishing"
        # Change the rules while both publish: add b, drop a, filter b, add a back ...
        key = f"{app.settings.key_prefix}:test:routed"
        changes, seen = 0, 0
        while seen < count:  # a change every ~30 messages, until they are half done
            seen = await poll(partial(progressed, app, key, seen + 30), 60, "published messages")
            n = changes % 4
            if n == 0:
                await app.topics.bind("b", "order.*", "b", replace_existing=True)
            elif n == 1:
                await app.topics.unbind("a")
            elif n == 2:
                await app.topics.bind("b", "order.*", "b", filter="payload.i % 2 == 0",
                                      replace_existing=True)
            else:
                await app.topics.bind("a", "order.#", "a")
            changes += 1
        for proc in producers:
            assert await read_line(proc, 120) == "done"
        routed = [orjson.loads(r) for r in
                  await app.broker.client.lrange(f"{app.settings.key_prefix}:test:routed", 0, -1)]
        assert len(routed) == 2 * count
        versions = {r["version"] for r in routed}
        assert len(versions) > 10, "the rules did not change while the producers published"
        # What each version routes order.shipped {"i": i} to, from the stored history.
        expected: dict[str, set[str]] = {}
        for r in routed:
            rules = await app.topics.store.at_version(r["version"])
            i = decode_i(r)
            queues = set()
            for b in rules.bindings:
                if b.filter is None or i % 2 == 0:
                    queues.add(b.queue)
            expected[r["id"]] = queues
        copies = await queue_contents(app, ["a", "b"])
        assert all(n == 1 for n in copies.values()), "a message was copied twice"
        for r in routed:
            got = {q for (origin, q) in copies if origin == r["id"]}
            assert got == expected[r["id"]] == set(r["queues"]), r
        unrouted = await app.queue("unrouted").dlq.list(limit=10_000)
        assert {e.message.headers["tidings-origin"] for e in unrouted if e.message} == {
            r["id"] for r in routed if not expected[r["id"]]}


async def progressed(app: Tidings, key: str, at_least: int) -> int:
    """How many messages the producers recorded, once at least ``at_least`` (else 0)."""
    done = int(await app.broker.client.llen(key))
    return done if done >= at_least else 0


def decode_i(record: dict[str, Any]) -> int:
    return int(record["i"])


async def test_a_producer_killed_mid_stream_and_run_again_leaves_one_copy_each(
        make_app: Callable[..., Tidings], processes: list[Any]) -> None:
    """SIGKILL a producer mid-stream, run it again from the start with the same keys:
    every message has exactly one copy in each bound queue (none lost, none doubled)."""
    app = make_app()
    count = 400
    async with app:
        await app.topics.bind("push", "order.*", "push")
        await app.topics.bind("sms", "order.shipped", "sms", filter="payload.i % 3 != 0")
        first = await spawn(app, "keyed", str(count))
        processes.append(first)
        while (await read_line(first)) != "at 150":
            pass
        first.kill()  # mid-stream, wherever it is: between publishes or inside one
        await first.wait()
        again = await spawn(app, "keyed", str(count))
        processes.append(again)
        while (line := await read_line(again, 120)) != "done":
            assert line.startswith("at "), line
        for name, expected in [("push", list(range(count))),
                               ("sms", [i for i in range(count) if i % 3])]:
            got = []
            for lane in app.key_space.queue(name).lanes:
                got += [decode(f[b"m"]).payload["i"]
                        for _, f in await app.broker.client.xrange(lane)]
            assert sorted(got) == expected, name
