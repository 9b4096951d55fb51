"""The pipelined channel: replies in order, redis-py's errors, reconnects and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import hiredis
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from servers import private_server
from tidings.engine.channel import Channel
from tidings.engine.embedded import find_server_binary


@pytest.fixture
async def channel(client: Redis) -> AsyncIterator[Channel]:
    chan = Channel(client.connection_pool, timeout=10.0)
    yield chan
    await chan.aclose()


async def test_concurrent_calls_each_get_their_own_reply(channel: Channel, prefix: str) -> None:
    async def one(i: int) -> bytes:
        await channel.execute_command("SET", f"{prefix}:k{i}", f"v{i}")
        reply: bytes = await channel.execute_command("GET", f"{prefix}:k{i}")
        return reply

    replies = await asyncio.gather(*(one(i) for i in range(500)))
    assert replies == [f"v{i}".encode() for i in range(500)]


async def test_error_replies_raise_redis_py_classes_and_the_channel_carries_on(
        channel: Channel, prefix: str) -> None:
    first_id = await channel.execute_command("CLIENT", "ID")
    with pytest.raises(NoScriptError):
        await channel.execute_command("EVALSHA", "0" * 40, 0)
    await channel.execute_command("SET", f"{prefix}:s", "text")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await channel.execute_command("HSET", f"{prefix}:s", "f", "v")
    pipe = channel.pipeline()
    pipe.execute_command("INCR", f"{prefix}:n")
    pipe.execute_command("HSET", f"{prefix}:s", "f", "v")
    pipe.execute_command("INCR", f"{prefix}:n")
    one, wrong, two = await pipe.execute(raise_on_error=False)
    assert (one, two) == (1, 2) and isinstance(wrong, ResponseError)
    assert await channel.execute_command("CLIENT", "ID") == first_id  # the same connection


async def test_a_cancelled_call_does_not_shift_the_replies(channel: Channel,
                                                           prefix: str) -> None:
    await channel.execute_command("SET", f"{prefix}:a", "A")
    await channel.execute_command("SET", f"{prefix}:b", "B")
    abandoned = channel.execute_command("GET", f"{prefix}:a")
    assert isinstance(abandoned, asyncio.Future)
    abandoned.cancel()  # before its reply can arrive: the loop has not run since the write
    assert await channel.execute_command("GET", f"{prefix}:b") == b"B"


async def test_a_killed_connection_is_replaced_on_the_next_call(channel: Channel,
                                                                client: Redis) -> None:
    killed = await channel.execute_command("CLIENT", "ID")
    await client.execute_command("CLIENT", "KILL", "ID", killed)
    outcomes: list[object] = []
    for _ in range(2):  # the first call may meet the dead socket, a transient error
        try:
            outcomes.append(await channel.execute_command("CLIENT", "ID"))
            break
        except RedisConnectionError as exc:
            outcomes.append(exc)
    new_id = outcomes[-1]
    assert isinstance(new_id, int) and new_id != killed
    assert all(isinstance(o, RedisConnectionError) for o in outcomes[:-1])


async def test_a_server_that_stops_answering_times_out_and_the_next_call_reconnects() -> None:
    with private_server(find_server_binary()) as port:
        pool_owner = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        chan = Channel(pool_owner.connection_pool, timeout=0.3)
        try:
            stalled_id = await chan.execute_command("CLIENT", "ID")
            await pool_owner.execute_command("CLIENT", "PAUSE", 1500, "ALL")
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(chan.execute_command("PING"), 5)
            await pool_owner.execute_command("CLIENT", "UNPAUSE")
            assert await chan.execute_command("CLIENT", "ID") != stalled_id
        finally:
            await chan.aclose()
            await pool_owner.aclose()


async def test_a_full_write_buffer_holds_later_calls_back_without_losing_them(
        channel: Channel, prefix: str) -> None:
    big = [hiredis.pack_command(("SET", f"{prefix}:big", "x" * 1000))] * 10_000  # 10 MB
    futures = await channel.send_many(big)
    wire = channel._wire
    assert wire is not None and wire.paused is not None  # the transport asked us to wait
    later = channel.execute_command("INCR", f"{prefix}:after")
    assert isinstance(later, asyncio.Task)  # queued behind the buffer, not written into it
    assert await asyncio.gather(*futures) == [b"OK"] * 10_000
    assert await later == 1


async def test_closed_channel_refuses_calls(client: Redis) -> None:
    chan = Channel(client.connection_pool, timeout=1.0)
    await chan.execute_command("PING")
    await chan.aclose()
    with pytest.raises(RedisConnectionError, match="closed"):
        await chan.execute_command("PING")


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_call_after_the_connection_closed_but_before_the_loop_noticed_reconnects(
        redis_url: str, loop_kind: str) -> None:
    """The worker's loop under ``tidings worker`` is uvloop, whose write on a closed
    transport raises RuntimeError: before the fix that stopped the worker."""
    pool_owner = Redis.from_url(redis_url)
    chan = Channel(pool_owner.connection_pool, timeout=5.0)

    async def scenario() -> tuple[int, int]:
        first: int = await chan.execute_command("CLIENT", "ID")
        wire = chan._wire
        assert wire is not None
        wire.transport.close()  # connection_lost runs on a later loop iteration
        second: int = await chan.execute_command("CLIENT", "ID")
        pipe = chan.pipeline()
        pipe.execute_command("PING")
        assert chan._wire is not None
        chan._wire.transport.close()
        assert await pipe.execute() == [b"PONG"]
        chan.reset()
        call = asyncio.ensure_future(chan.execute_command("CLIENT", "ID"))
        # Polled on purpose: the moment wanted is one loop iteration wide.
        while chan._wire is None:  # noqa: ASYNC110  # connected; the call has not written
            await asyncio.sleep(0)
        chan.reset()  # as the worker does to a blocked read it gave up on
        assert isinstance(await asyncio.wait_for(call, 3), int)
        await chan.aclose()
        await pool_owner.aclose()
        return first, second

    if loop_kind == "uvloop":
        import uvloop  # a dependency wherever tidings runs workers (not on Windows)

        first, second = uvloop.run(scenario())
    else:
        first, second = asyncio.run(scenario())
    assert second != first


def test_a_channel_used_from_a_new_event_loop_opens_a_new_connection(redis_url: str) -> None:
    pool_owner = Redis.from_url(redis_url)
    chan = Channel(pool_owner.connection_pool, timeout=1.0)

    async def client_id() -> int:
        reply: int = await chan.execute_command("CLIENT", "ID")
        return reply

    first = asyncio.run(client_id())  # that loop closes with the connection still open
    second = asyncio.run(client_id())
    assert second != first
    asyncio.run(chan.aclose())
