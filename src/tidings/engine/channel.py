"""A pipelined connection for the hot calls: scripts and short commands, never blocking ones.

Why it exists: redis-py's call path (pool checkout with a health check, the retry wrapper,
observability hooks, a timeout around the write and another around the read) costs about
115 us of CPU per command on the reference machine; the same round trip written straight to
the transport costs about 27 us. A single publish is one script call, so that difference is
most of its cost (see the README's performance section).

Every caller in the process shares one connection: concurrent calls are pipelined on it and
replies are matched to requests in order, so a hundred publishing tasks cost one socket and
their commands travel together. Blocking commands (XREAD BLOCK) must not use a channel: they
would hold up every call behind them; they stay on the redis-py pool.

The handshake (TLS, AUTH, SELECT, the client name, a refused password) stays redis-py's: the
channel opens a connection of the app's own pool class and then takes over its transport.
Replies are parsed by hiredis and error replies become the exception classes redis-py raises
(NoScriptError, NoPermissionError ...), so callers cannot tell the two paths apart except by
cost. Replies are raw (no response callbacks): scripts' replies, integers, bulk strings.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

# hiredis accepts these as command arguments (ints and floats are formatted in C).
Arg = str | bytes | int | float | memoryview


class _Wire(asyncio.Protocol):
    """One connection's replies, matched in order to the futures of the requests."""

    def __init__(self, channel: Channel, transport: asyncio.Transport) -> None:
        self.channel = channel
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.deadlines: deque[float] = deque()
        self.lost: Exception | None = None
        self.paused: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # one per wire, at the oldest deadline

    def data_received(self, data: bytes) -> None:
        reader, waiting, deadlines = self.reader, self.waiting, self.deadlines
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()
                deadlines.popleft()
                if future.done():  # its caller was cancelled; the reply is dropped
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    error = _error(reply)
                    future.set_exception(error)
                    if isinstance(error, ReadOnlyError):  # a demoted primary: find the new one
                        self.drop(RedisConnectionError("the server became a replica"))
                else:
                    future.set_result(_errors_within(reply))
        except (hiredis.ProtocolError, IndexError) as exc:  # a reply nobody asked for
            self.drop(RedisConnectionError(f"protocol out of step: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to the server lost: {exc or 'closed'}"))

    def pause_writing(self) -> None:
        if self.paused is None:
            self.paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    def write(self, data: bytes) -> None:
        try:
            self.transport.write(data)
        except RuntimeError as exc:  # uvloop, on a transport closed under us: not a crash
            self.drop(RedisConnectionError(f"connection to the server closed: {exc}"))

    def closed(self) -> bool:
        return self.lost is not None or self.transport.is_closing()

    def drop(self, error: Exception) -> None:
        """Give up the connection: every pending call fails with ``error``."""
        self.fail(error)
        self.transport.close()

    def fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
            self.channel.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.deadlines.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self.resume_writing()

    def watch(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make sure a timer runs by ``deadline`` (the oldest pending call's)."""
        if self.timer is None:
            self.timer = loop.call_at(deadline, self.check_deadline)

    def check_deadline(self) -> None:
        """Fail everything if the oldest call has waited past the socket timeout.

        One timer per connection, moved to the oldest pending deadline when it fires, so a
        call costs no timer of its own (deadlines only grow: the oldest is the first).
        """
        self.timer = None
        deadlines = self.deadlines
        if not deadlines or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        if deadlines[0] <= loop.time():
            self.drop(RedisTimeoutError("timeout reading from the server"))
        else:
            self.timer = loop.call_at(deadlines[0], self.check_deadline)


def _pack(args: tuple[Arg, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub: 1-tuples
    return packed


def _error(reply: hiredis.ReplyError) -> Exception:
    """The exception redis-py raises for this error reply (NOSCRIPT: NoScriptError ...)."""
    error: Exception = BaseParser.parse_error(reply.args[0])  # type: ignore[no-untyped-call]
    return error


def _errors_within(reply: Any) -> Any:
    """A pipeline reply may hold error replies inside an array (a script's error table)."""
    if type(reply) is list:
        for i, item in enumerate(reply):
            if isinstance(item, hiredis.ReplyError):
                reply[i] = _error(item)
    return reply


class Channel:
    """A shared, pipelined connection to the server for non-blocking commands."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self._pool = pool  # redis-py's pool: its connection class and arguments
        self._timeout = timeout
        self._wire: _Wire | None = None
        self._connection: Any = None  # redis-py's connection object, kept to close it
        self._connecting: asyncio.Future[_Wire] | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self._closed = False

    def execute_command(self, *args: Arg) -> Awaitable[Any]:
        """Send one command; await its raw reply (an error reply raises)."""
        wire = self._wire
        if (wire is None or wire.paused is not None or wire.loop is not asyncio.get_running_loop()
                or wire.closed()):
            return asyncio.ensure_future(self._send_later([_pack(args)]))
        return self._send(wire, _pack(args))

    def pipeline(self, transaction: bool = False) -> ChannelPipeline:
        """Commands sent together in one write (``transaction`` must be False)."""
        if transaction:
            raise ValueError("a channel pipeline is never a transaction")
        return ChannelPipeline(self)

    async def send_many(self, packed: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Write packed commands in one go; the futures of their replies, in order."""
        wire = self._wire
        loop = asyncio.get_running_loop()
        if (wire is None or wire.paused is not None or wire.loop is not loop
                or wire.closed()):
            wire = await self._ready()
        futures = [loop.create_future() for _ in packed]
        deadline = loop.time() + self._timeout
        wire.waiting.extend(futures)
        wire.deadlines.extend(deadline for _ in packed)
        wire.write(b"".join(packed))
        wire.watch(loop, deadline)
        return futures

    def _send(self, wire: _Wire, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        deadline = loop.time() + self._timeout
        wire.waiting.append(future)
        wire.deadlines.append(deadline)
        wire.write(packed)
        if wire.timer is None:
            wire.timer = loop.call_at(deadline, wire.check_deadline)
        return future

    async def _send_later(self, packed: list[bytes]) -> Any:
        (future,) = await self.send_many(packed)
        return await future

    async def _ready(self) -> _Wire:
        """The connected wire, once its write buffer has room; connects if needed."""
        while True:
            wire = self._wire
            if wire is not None and wire.loop is not asyncio.get_running_loop():
                # Opened on a loop that is gone (asyncio.run twice with one app): its
                # transport and timer belong to that loop, so leave them and start afresh.
                self._wire = self._connection = self._connecting = None
                wire = None
            elif wire is not None and wire.closed():
                # Closed (by the server, or reset while we waited for the connection) and
                # connection_lost not yet run: a write now would vanish (asyncio) or raise
                # RuntimeError (uvloop). Nothing was written for this call: sending it on a
                # new connection is safe.
                wire.fail(RedisConnectionError("connection to the server closed"))
                wire = None
            if wire is None:
                await self._connect()
                continue  # look again: the new connection may be gone by now
            if wire.paused is None:
                return wire
            await asyncio.shield(wire.paused)

    async def _connect(self) -> _Wire:
        if self._closed:
            raise RedisConnectionError("the channel is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Wire:
        await self._release_connection()
        connection = self._pool.connection_class(**self._pool.connection_kwargs)
        await connection.connect()
        writer = getattr(connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is None:  # a redis-py we do not know: refuse rather than guess
            await connection.disconnect(nowait=True)
            raise RuntimeError("this redis-py keeps its transport elsewhere; "
                               "tidings' channel cannot take it over")
        wire = _Wire(self, transport)
        transport.set_protocol(wire)
        self._connection, self._wire = connection, wire
        return wire

    def reset(self) -> None:
        """Drop the connection now (its pending calls fail); the next call opens another.

        For a connection left blocked on a command whose caller gave up waiting."""
        wire = self._wire
        if wire is not None and wire.loop is asyncio.get_running_loop():
            wire.drop(RedisConnectionError("connection reset by tidings"))
        connection, self._connection = self._connection, None
        if connection is not None:
            closing = asyncio.ensure_future(connection.disconnect(nowait=True))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def forget(self, wire: _Wire) -> None:
        if self._wire is wire:
            self._wire = None

    async def _release_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    async def aclose(self) -> None:
        self._closed = True
        wire = self._wire
        if wire is not None and wire.loop is not asyncio.get_running_loop():
            self._wire = self._connection = None  # that loop is gone, and its socket with it
        elif wire is not None:
            wire.drop(RedisConnectionError("the channel was closed"))
        await self._release_connection()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class ChannelPipeline:
    """The part of redis-py's pipeline interface that the script layer uses."""

    __slots__ = ("_channel", "_packed")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._packed: list[bytes] = []

    def execute_command(self, *args: Arg) -> ChannelPipeline:
        self._packed.append(_pack(args))
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """The replies in order; error replies raise, or stand in the list as exceptions."""
        packed, self._packed = self._packed, []
        if not packed:
            return []
        futures = await self._channel.send_many(packed)
        replies: list[Any] = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, (RedisConnectionError, RedisTimeoutError)) or (
                    raise_on_error and isinstance(reply, Exception)):
                raise reply
        return replies
