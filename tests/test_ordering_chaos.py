"""Per-key order across worker processes that are SIGKILLed at random and replaced.

Workers run tests/apps/ordered_app.py; every handler call is logged (start, finish, or
cancel) in Redis. The claims checked, per key: every message is processed; messages are
first finished in publish order; a key never goes back to an earlier message; and no two
calls of one key ever overlap in time (a killed worker's call ends when it was killed).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from flow_helpers import start_worker, stop_worker
from tidings import Tidings
from tidings.ordering.queue import OrderedQueue

APP = "tests.apps.ordered_app:app"
KEYS, PER_KEY, WAVES = 24, 40, 4


def analyse(log: list[list[Any]], killed: dict[int, float]) -> dict[str, int]:
    starts: dict[str, list[int]] = defaultdict(list)
    firsts: dict[str, list[int]] = defaultdict(list)
    ends: dict[tuple[str, int, int, float], float] = {}
    for entry in log:
        kind, key, seq, pid, start = entry[:5]
        if kind == "s":
            starts[key].append(seq)
        else:
            ends[(key, seq, pid, start)] = entry[5]
            if kind == "d" and seq not in firsts[key]:
                firsts[key].append(seq)
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for kind, key, seq, pid, start, *_ in log:
        if kind == "s":
            end = ends.get((key, seq, pid, start), killed.get(pid))
            assert end is not None, f"{key}/{seq} started by {pid} never ended"
            intervals[key].append((start, end, seq))
    for key in starts:
        assert firsts[key] == list(range(PER_KEY)), f"{key} finished out of order"
        assert starts[key] == sorted(starts[key]), f"{key} went back to an earlier message"
        spans = sorted(intervals[key])
        for (_, end, seq), (start, _, nxt) in itertools.pairwise(spans):
            assert start >= end - 0.001, f"{key}: {seq} and {nxt} overlapped"
    total = sum(len(v) for v in starts.values())
    return {"calls": total, "redelivered": total - KEYS * PER_KEY}


@pytest.mark.slow
async def test_order_holds_through_random_sigkills(make_app: Callable[..., Tidings],
                                                   redis_url: str) -> None:
    app = make_app()
    chaos = OrderedQueue(app, "chaos", partitions=8, lease=1.5)  # the producer's view
    env = {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": app.settings.key_prefix,
           "ORDERED_SLEEP": "0.1"}
    rng = random.Random(7)
    keys = [f"account-{i}" for i in range(KEYS)]
    per_wave = PER_KEY // WAVES

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker(APP, env, command=("ordered", "worker"))

    procs = [spawn() for _ in range(3)]
    killed: dict[int, float] = {}
    client = (await app.connect()).broker.client
    log_key = f"{app.settings.key_prefix}:ordered:log"
    try:
        for wave in range(WAVES):
            await chaos.publish_many([(key, {"seq": wave * per_wave + n})
                                      for n in range(per_wave) for key in keys])
            for _ in range(2):
                await asyncio.sleep(rng.uniform(0.4, 0.9))
                victim = procs.pop(rng.randrange(len(procs)))
                stop_worker(victim, kill=True)
                killed[victim.pid] = time.time()
                procs.append(spawn())
        deadline = time.monotonic() + 90
        while True:
            stats = await chaos.stats()
            if stats.counters.get("acked", 0) >= KEYS * PER_KEY:
                break
            assert time.monotonic() < deadline, f"stuck: {stats}"
            await asyncio.sleep(0.2)
        assert (stats.ready, stats.active, stats.waiting, stats.blocked) == (0, 0, 0, 0)
        # A dead worker's partitions are taken over once its lease and membership lapse.
        for _ in range(int(3 * 1.5 / 0.1) + 10):
            if "" not in (await chaos.stats()).owners.values():
                break
            await asyncio.sleep(0.1)
        owners = (await chaos.stats()).owners
        assert "" not in owners.values(), owners  # no partition left without an owner
        assert len(set(owners.values())) == 3
    finally:
        for proc in procs:
            stop_worker(proc)
    log = [orjson.loads(item) for item in await client.lrange(log_key, 0, -1)]
    summary = analyse(log, killed)
    print(f"\n{len(killed)} SIGKILLs, {KEYS * PER_KEY} messages over {KEYS} keys: "
          f"{summary['calls']} calls, {summary['redelivered']} redelivered, order held")
    assert len(killed) == 2 * WAVES
