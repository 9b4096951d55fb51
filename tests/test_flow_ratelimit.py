"""The fleet-wide token bucket, against a real Redis server."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from flow_helpers import race_children, start_child
from tidings.core.errors import ValidationError
from tidings.engine.scripts import Script
from tidings.flow import RateLimit


@pytest.mark.parametrize(
    ("spec", "rate"),
    [
        ("100/s", 100.0),
        ("1/min", 1 / 60),
        ("500/h", 500 / 3600),
        ("10/5m", 10 / 300),
        ("2/day", 2 / 86400),
        (" 3 / 2 sec ", 1.5),
        ("30/Minutes", 0.5),
    ],
)
def test_parse(spec: str, rate: float) -> None:
    assert RateLimit.parse(spec) == pytest.approx(rate)


@pytest.mark.parametrize("spec", ["", "100", "100/", "/s", "1/ms", "1/fortnight", "0/s", "1/0s"])
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(ValidationError) as info:
        RateLimit.parse(spec)
    assert info.value.field == "rate"


async def test_invalid_arguments(client: Redis, prefix: str) -> None:
    with pytest.raises(ValidationError):
        RateLimit(client, 0, prefix=prefix)
    with pytest.raises(ValidationError):
        RateLimit(client, 10, burst=0, prefix=prefix)
    with pytest.raises(ValidationError):
        await RateLimit(client, 10, prefix=prefix).acquire("q", 0)
    with pytest.raises(ValidationError):
        await RateLimit(client, 10, prefix=prefix).acquire("", 1)


async def test_spec_and_default_burst(client: Redis, prefix: str) -> None:
    assert RateLimit(client, "100/s", prefix=prefix).burst == 100
    assert RateLimit(client, "1/min", prefix=prefix).burst == 1
    limit = RateLimit(client, "500/h", 7, prefix=prefix)
    assert limit.rate == pytest.approx(500 / 3600)
    assert limit.burst == 7


async def test_burst_then_limited(client: Redis, prefix: str) -> None:
    limit = RateLimit(client, rate=10, burst=5, prefix=prefix)
    assert await limit.acquire("sms", 3) == (3, 0.0)
    granted, wait = await limit.acquire("sms", 10)
    assert granted == 2  # only what is left of the burst, never more
    assert 0 < wait <= 0.1  # one token per 100 ms
    granted, wait = await limit.acquire("sms")
    assert granted == 0
    assert 0 < wait <= 0.1


async def test_tokens_come_back_after_the_wait(client: Redis, prefix: str) -> None:
    limit = RateLimit(client, rate=50, burst=2, prefix=prefix)
    assert (await limit.acquire("q", 2))[0] == 2
    granted, wait = await limit.acquire("q")
    assert granted == 0
    await asyncio.sleep(wait + 0.005)  # the bucket refills on the server's clock
    assert (await limit.acquire("q"))[0] == 1


async def test_names_are_independent(client: Redis, prefix: str) -> None:
    limit = RateLimit(client, rate=1, burst=1, prefix=prefix)
    assert (await limit.acquire("sms:recipient:+4912345"))[0] == 1
    assert (await limit.acquire("sms:recipient:+4912345"))[0] == 0
    assert (await limit.acquire("sms:recipient:+4967890"))[0] == 1


async def test_key_expires_once_it_would_be_full(client: Redis, prefix: str) -> None:
    limit = RateLimit(client, rate=100, burst=50, prefix=prefix)
    await limit.acquire("q", 20)
    key = limit.key("q")
    assert key.endswith("{q}")  # one hash slot per name
    ttl = await client.pttl(key)
    # 20 tokens short at 100/s: full (so equal to no key at all) in 200 ms.
    assert 150 < ttl <= 201
    await limit.acquire("q", 50)
    assert 450 < await client.pttl(key) <= 501


async def _drive(limit: RateLimit, name: str, duration: float) -> tuple[int, float, float]:
    """Take tokens as fast as allowed for ``duration`` s; returns (granted, start, end)."""
    granted = 0
    start = time.monotonic()
    end = start
    while end - start < duration:
        got, wait = await limit.acquire(name, 5)
        end = time.monotonic()
        granted += got
        if got < 5:
            await asyncio.sleep(wait)
    return granted, start, end


def _assert_accurate(granted: int, elapsed: float, rate: float, burst: int) -> None:
    expected = rate * elapsed + burst
    assert abs(granted - expected) <= 0.05 * expected, (granted, expected)


async def test_accuracy_two_connections(client: Redis, client2: Redis, prefix: str) -> None:
    rate, burst = 200.0, 20
    a = RateLimit(client, rate, burst, prefix=prefix)
    b = RateLimit(client2, rate, burst, prefix=prefix)
    results = await asyncio.gather(_drive(a, "sms", 2.0), _drive(b, "sms", 2.0))
    elapsed = max(r[2] for r in results) - min(r[1] for r in results)
    total = sum(r[0] for r in results)
    assert all(r[0] > 0 for r in results)  # both really competed
    _assert_accurate(total, elapsed, rate, burst)


_CHILD = """
import asyncio, json, sys, time
from redis.asyncio import Redis
from tidings.flow import RateLimit

async def main(url, prefix, rate, burst, duration):
    client = Redis.from_url(url)
    limit = RateLimit(client, rate, burst, prefix=prefix)
    await client.ping()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    granted, start = 0, time.time()
    end = start
    while end - start < duration:
        got, wait = await limit.acquire("sms", 5)
        end = time.time()
        granted += got
        if got < 5:
            await asyncio.sleep(wait)
    print(json.dumps([granted, start, end]), flush=True)
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]),
                 float(sys.argv[5])))
"""


async def test_accuracy_two_processes(redis_url: str, prefix: str) -> None:
    rate, burst, duration = 200.0, 20, 2.0
    args = (redis_url, prefix, str(rate), str(burst), str(duration))
    results = await race_children([await start_child(_CHILD, *args) for _ in range(2)])
    elapsed = max(r[2] for r in results) - min(r[1] for r in results)
    total = sum(r[0] for r in results)
    assert all(r[0] > 0 for r in results)
    assert math.isclose(elapsed, duration, abs_tol=0.5)
    _assert_accurate(total, elapsed, rate, burst)


async def test_script_loads_itself_on_noscript(client: Redis, prefix: str) -> None:
    script = Script("rate_limit_acquire")  # a fresh copy, not the library's
    # A never-loaded variant stands in for an emptied script cache; SCRIPT FLUSH would
    # disturb everyone else using this server.
    script.source += f"\n-- {uuid4().hex}\n"
    script.sha = hashlib.sha1(script.source.encode()).hexdigest()
    assert await client.script_exists(script.sha) == [False]
    granted, _ = await script(client, [f"{prefix}:ratelimit:{{q}}"], [10, 5, 3])
    assert granted == 3
    assert await client.script_exists(script.sha) == [True]


async def test_an_override_applies_from_the_next_acquire_and_caps_the_bucket(
        client: Redis, prefix: str) -> None:
    limit = RateLimit(client, rate=1000, burst=100, prefix=prefix)
    assert (await limit.acquire("q", 10))[0] == 10
    assert await limit.set_override("q", "1/h", burst=2) == (1 / 3600, 2)
    assert limit.override_key("q").endswith("{q}")  # the bucket's slot in a Cluster
    granted, wait = await limit.acquire("q", 50)
    assert granted == 2  # the bucket's ~90 tokens, capped at the new burst
    assert wait > 3000  # the next token at one an hour
    await limit.clear_override("q")
    assert await limit.override("q") is None
    _, wait = await limit.acquire("q", 50)
    assert wait <= 1 / 1000  # the code's rate again
