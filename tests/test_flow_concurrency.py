"""The fleet-wide concurrency cap with leases, against a real Redis server."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from flow_helpers import child_ready, kill_children, race_children, start_child
from tidings.core.errors import ValidationError
from tidings.flow import ConcurrencyLimit


async def test_invalid_arguments(client: Redis, prefix: str) -> None:
    with pytest.raises(ValidationError):
        ConcurrencyLimit(client, 0, prefix=prefix)
    with pytest.raises(ValidationError):
        ConcurrencyLimit(client, 1, lease=0, prefix=prefix)
    with pytest.raises(ValidationError):
        await ConcurrencyLimit(client, 1, prefix=prefix).acquire("p", 0)


async def test_grants_up_to_the_limit(client: Redis, prefix: str) -> None:
    cap = ConcurrencyLimit(client, 3, prefix=prefix)
    first = await cap.acquire("provider:x", 2)
    second = await cap.acquire("provider:x", 2)
    assert len(first) == 2
    assert len(second) == 1  # partial: only one slot left
    assert 29_000 < await client.pttl(cap.key("provider:x")) <= 30_000  # gone once idle
    assert await cap.acquire("provider:x") == []
    assert len(set(first + second)) == 3
    assert await cap.acquire("provider:y", 5) != []  # names are independent

    assert await cap.release("provider:x", first[:1]) == 1
    third = await cap.acquire("provider:x", 2)
    assert len(third) == 1
    assert await cap.release("provider:x", [*first, *second, *third]) == 3
    assert await cap.release("provider:x", []) == 0
    assert await client.exists(cap.key("provider:x")) == 0


async def test_renew_extends_live_leases_and_reports_lost_ones(client: Redis, prefix: str) -> None:
    short = ConcurrencyLimit(client, 2, lease=5, prefix=prefix)
    long = ConcurrencyLimit(client, 2, lease=500, prefix=prefix)
    tokens = await short.acquire("p", 2)
    key = short.key("p")
    before = await client.zscore(key, tokens[0])
    assert before is not None
    assert await short.release("p", tokens[1:]) == 1

    assert await long.renew("p", [*tokens, "never-held"]) == [tokens[1], "never-held"]
    after = await client.zscore(key, tokens[0])
    assert after is not None
    assert after - before >= 494_000  # now a 500 s lease
    assert await client.zscore(key, tokens[1]) is None  # lost tokens are not revived
    assert 499_000 < await client.pttl(key) <= 500_000  # the key outlives the longest lease
    assert await long.renew("p", []) == []


async def test_expired_lease_is_purged_and_lost(client: Redis, prefix: str) -> None:
    cap = ConcurrencyLimit(client, 2, lease=0.05, prefix=prefix)
    # A live long-lease holder keeps the key, so only the purge can free the short lease.
    [steady] = await ConcurrencyLimit(client, 2, lease=60, prefix=prefix).acquire("p")
    [token] = await cap.acquire("p")
    assert await cap.acquire("p") == []
    # The lease runs on the server's clock; there is no event to await.
    await asyncio.sleep(0.08)
    assert len(await cap.acquire("p")) == 1
    assert await client.zscore(cap.key("p"), steady) is not None
    assert await cap.renew("p", [token]) == [token]
    assert await cap.release("p", [token]) == 0


async def test_hold_releases_on_exit(client: Redis, prefix: str) -> None:
    cap = ConcurrencyLimit(client, 1, prefix=prefix)
    with pytest.raises(RuntimeError):
        async with cap.hold("p") as tokens:
            assert len(tokens) == 1
            async with cap.hold("p") as none:
                assert none == []
            raise RuntimeError("handler failed")
    assert len(await cap.acquire("p")) == 1


_WORKER = """
import asyncio, json, random, sys, time
from redis.asyncio import Redis
from tidings.flow import ConcurrencyLimit

async def main(url, prefix, limit, tasks, duration):
    client = Redis.from_url(url)
    cap = ConcurrencyLimit(client, limit, lease=10, prefix=prefix)
    counter = f"{prefix}:running"
    peak = done = 0

    async def task(deadline):
        nonlocal peak, done
        while time.monotonic() < deadline:
            tokens = await cap.acquire("provider:x")
            if not tokens:
                await asyncio.sleep(0.002)  # nothing to await: slots free up elsewhere
                continue
            try:
                peak = max(peak, await client.incr(counter))
                await asyncio.sleep(random.uniform(0.001, 0.01))
                await client.decr(counter)
            finally:
                await cap.release("provider:x", tokens)
            done += 1

    await client.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    deadline = time.monotonic() + duration
    await asyncio.gather(*(task(deadline) for _ in range(tasks)))
    print(json.dumps([peak, done]), flush=True)
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                 float(sys.argv[5])))
"""


async def test_cap_never_exceeded_across_processes(client: Redis, redis_url: str,
                                                   prefix: str) -> None:
    limit = 3
    procs = [await start_child(_WORKER, redis_url, prefix, str(limit), "6", "1.2")
             for _ in range(2)]
    results = await race_children(procs)
    assert max(peak for peak, _ in results) == limit  # reached, never exceeded
    assert all(done > 20 for _, done in results)  # both processes really worked
    assert await client.get(f"{prefix}:running") == b"0"


_HOLDER = """
import asyncio, sys
from redis.asyncio import Redis
from tidings.flow import ConcurrencyLimit

async def main(url, prefix, lease):
    client = Redis.from_url(url)
    tokens = await ConcurrencyLimit(client, 3, lease=lease, prefix=prefix).acquire("p", 2)
    print("ready", len(tokens), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


async def test_killed_holders_slots_come_back_after_the_lease(client: Redis, redis_url: str,
                                                             prefix: str) -> None:
    lease = 0.5
    cap = ConcurrencyLimit(client, 3, lease=lease, prefix=prefix)
    # A live holder with a long lease: the dead one's slots must be purged, not just expire
    # with the whole key.
    assert len(await ConcurrencyLimit(client, 3, lease=60, prefix=prefix).acquire("p")) == 1
    proc = await start_child(_HOLDER, redis_url, prefix, str(lease))
    try:
        line = await child_ready(proc)
        held_at = time.monotonic()
    finally:
        await kill_children([proc])
    assert line == b"ready 2\n"
    assert await cap.acquire("p") == []  # the dead worker still holds both slots

    granted: list[str] = []
    while not granted and time.monotonic() - held_at < lease + 1:
        await asyncio.sleep(0.01)  # the lease lapses on the server's clock
        granted = await cap.acquire("p", 2)
    back_after = time.monotonic() - held_at
    assert len(granted) == 2
    assert lease * 0.8 <= back_after <= lease + 0.5
