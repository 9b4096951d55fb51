"""Zero-downtime deploys: a rolling restart of a whole fleet under load loses nothing.

Four ``tidings worker`` processes consume a queue that a producer feeds steadily; each
is sent SIGTERM in turn and a replacement started, as a Deployment's rolling update does.
A SIGTERM'd worker stops fetching, lets its handlers finish within ``--grace`` seconds,
and hands back (XCLAIM to nobody, immediately visible) what did not finish. The
visibility timeout is 60 s, so a message that was *not* handed back would sit out its
lease, far past the time the test gives the fleet to finish: the test fails on a lost
hand-back rather than on a timing bound.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from fault_helpers import QUEUE, Recording, WorkerProcs, consumer_of, is_settled, poll, wait_exit
from tidings import Tidings

FLEET = 4
VT = 60.0


async def steady(app: Tidings, published: list[str], stop: asyncio.Event) -> None:
    """Publish 10 messages every 50 ms (about 200/s, less on a busy machine) until ``stop``."""
    q = app.get_queue(QUEUE)
    n = 0
    while not stop.is_set():
        published.extend(await q.publish_many({"n": n + i} for i in range(10)))
        n += 10
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(("sleep", "grace"), [(0.2, 5.0), (1.0, 0.3)],
                         ids=["handlers-finish-in-grace", "handlers-handed-back"])
async def test_a_rolling_restart_of_the_fleet_under_load_loses_nothing(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None],
        sleep: float, grace: float) -> None:
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    env = workers.env(fault_app, vt=VT, sleep=sleep, concurrency=64, latency=1)
    fleet = [workers.start(env, "--grace", str(grace), "--summary-every", "0")
             for _ in range(FLEET)]
    for proc in fleet:
        await consumer_of(q, proc, detail=workers.all_logs)
    published: list[str] = []
    stop = asyncio.Event()
    producer = asyncio.create_task(steady(fault_app, published, stop))
    await poll(rec.started_count, 20, "the fleet to start handling", workers.all_logs)

    exits: list[float] = []
    for i, old in enumerate(list(fleet)):
        new = workers.start(env, "--grace", str(grace), "--summary-every", "0")
        await consumer_of(q, new, detail=workers.all_logs)  # surge first, then retire
        old.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await wait_exit(old, grace + 20) == 0, workers.log(old)
        exits.append(time.monotonic() - signalled)
        fleet[i] = new
    stop.set()
    await producer

    async def finished() -> bool:
        return await rec.done_count() == len(published) and await is_settled(q)

    await poll(finished, VT / 3, "the new fleet to process everything", workers.all_logs)
    done, started = await rec.done(), await rec.started()
    assert set(done) == set(published)
    assert set(done.values()) == {1}  # each finished exactly once
    released = (await q.stats()).counters.get("released", 0)
    if sleep < grace:
        assert set(started.values()) == {1} and released == 0  # all finished in the grace
    else:
        assert released > 0 and max(started.values()) >= 2  # cut short, handed back, re-run
    assert all(p.poll() is None for p in fleet)
    delays = sorted(int(v) for v in (await fault_app.broker.client.hgetall(
        f"{fault_app.settings.key_prefix}:fault:latency")).values())
    report(f"rolling restart of {FLEET} workers ({sleep}s handlers, grace {grace}s) under "
           f"~200 msg/s: {len(published)} published, all processed once, {released} handed "
           f"back; exits after SIGTERM max {max(exits):.1f}s; publish-to-finish delay median "
           f"{delays[len(delays) // 2]} ms, max {delays[-1]} ms")

