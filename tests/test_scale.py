"""Consumers at scale: 100 worker processes on one queue (issue 14, item 3).

Real ``tidings worker`` processes (tests/apps/fault_app.py) against the session's server:
every message is processed once, every process gets a share, ``kill -9`` of a tenth of
the fleet is absorbed by reclaim, and the consumer group does not keep the dead
consumers: the reclaim pass removes a consumer that stopped heartbeating more than
``max(3 x visibility timeout, 10 s)`` ago and holds no pending entry (reclaim.lua).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
from collections.abc import Callable

import pytest

from fault_helpers import QUEUE, Recording, WorkerProcs, is_settled, poll, text
from tidings import Tidings
from tidings.core.keys import GROUP

FLEET = 100
CONCURRENCY = 2
KILLED = 10


async def registered(app: Tidings, count: int) -> set[str]:
    """The consumer names that heartbeat, once there are ``count`` of them."""
    q = app.get_queue(QUEUE)

    async def check() -> set[str] | None:
        names = {text(n) for n in await app.broker.client.zrange(q.keys.consumers, 0, -1)}
        return names if len(names) >= count else None

    return set(await poll(check, 240, f"{count} workers to register"))


async def group_consumers(app: Tidings) -> set[str]:
    """Every consumer name the queue's consumer group holds, over its three lanes."""
    q = app.get_queue(QUEUE)
    names: set[str] = set()
    for lane_key in q.keys.lanes:
        for info in await app.broker.client.xinfo_consumers(lane_key, GROUP):
            names.add(text(info["name"]))
    return names


def start_fleet(app: Tidings, workers: WorkerProcs, count: int) -> list[subprocess.Popen[bytes]]:
    env = workers.env(app, vt=2, sleep=0.02, concurrency=CONCURRENCY)
    return [workers.start(env, "--summary-every", "0") for _ in range(count)]


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_hundred_worker_processes_share_one_queue_and_survive_kill_9(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    fleet = start_fleet(fault_app, workers, FLEET)
    await registered(fault_app, FLEET)

    # Phase 1: the whole fleet, no faults: each message processed exactly once.
    first = 4000
    ids = await q.publish_many({"i": i} for i in range(first))

    async def all_done() -> bool:
        return await rec.done_count() == first and await is_settled(q)

    await poll(all_done, 180, "the fleet to process phase 1", workers.all_logs)
    done = await rec.done()
    assert set(done) == set(ids) and set(done.values()) == {1}
    shares = [await rec.done_by(p.pid) for p in fleet]
    assert sum(shares) == first
    assert min(shares) > 0, f"starved processes: {shares.count(0)}"
    fair = first / FLEET
    report(f"{FLEET} workers x concurrency {CONCURRENCY}, {first} messages: each once; "
           f"share per process min {min(shares)} / median {statistics.median(shares):g} / "
           f"max {max(shares)} (fair share {fair:g})")

    # Phase 2: kill -9 a tenth of the fleet mid-stream; reclaim hands their leases over.
    second = 2000
    before = {p.pid: await rec.done_by(p.pid) for p in fleet}
    more = await q.publish_many({"j": i} for i in range(second))
    async def quarter_done() -> bool:
        return await rec.done_count() > first + second // 4

    await poll(quarter_done, 60, "a quarter of phase 2", workers.all_logs)
    victims, survivors = fleet[:KILLED], fleet[KILLED:]
    for proc in victims:
        proc.kill()
    for proc in victims:
        await asyncio.to_thread(proc.wait, 10)

    async def all_done_again() -> bool:
        return await rec.done_count() == first + second and await is_settled(q)

    await poll(all_done_again, 120, "the survivors to finish phase 2", workers.all_logs)
    done = await rec.done()
    assert set(more) <= set(done)
    # At least once: only a killed process's last leases (up to its concurrency, finished
    # but not yet acknowledged) may run twice.
    twice = sum(n - 1 for n in done.values())
    assert twice <= KILLED * CONCURRENCY, twice
    assert all(p.poll() is None for p in survivors), workers.all_logs()

    # Bounded bookkeeping: the group forgets the dead (10 s + one reclaim pass after
    # their last heartbeat), keeps every live one.
    async def forgotten() -> bool:
        zset = {text(n) for n in await fault_app.broker.client.zrange(q.keys.consumers, 0, -1)}
        return len(zset) == FLEET - KILLED and await group_consumers(fault_app) <= zset

    await poll(forgotten, 60, "dead consumers to be removed from the group")
    assert len(await group_consumers(fault_app)) <= FLEET - KILLED
    gained = [await rec.done_by(p.pid) - before[p.pid] for p in survivors]
    report(f"kill -9 of {KILLED}: {second} more messages all processed, {twice} twice; "
           f"the group holds {len(await group_consumers(fault_app))} consumers "
           f"(the {FLEET - KILLED} live ones); phase-2 share per survivor min {min(gained)} "
           f"/ median {statistics.median(gained):g} / max {max(gained)}")

