"""The connection to the Redis-compatible server: start-up checks, bounded retries, durability.

Everything that talks to the server for the producer side and for operators goes through
:class:`Broker`, so reconnect and error translation live in one place. The broker knows
servers and scripts, not queues: the layers above hand it keys and script calls.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.cluster import is_cluster_url
from ..core.config import Durability
from ..core.errors import (
    BrokerUnavailableError,
    DurabilityError,
    QueueFullError,
    ServerConfigError,
)
from ..core.keys import GROUP
from ..core.sentinel import is_sentinel_url
from ..core.settings import Settings
from ..core.stored import text
from .channel import Channel
from .cluster import ClusterChannel, cluster_client, read_slot_map
from .connection import TRANSIENT, raise_if_denied, with_fast_packing
from .memory import RETRY_AFTER_FULL, MemoryGauge
from .scripts import LIBRARY, Script, ScriptCall, run_pipelined
from .sentinel import PrimaryWatch, check_min_replicas, close_sentinels, sentinel_pool
from .tls import connection_url

log = logging.getLogger("tidings.engine")
T = TypeVar("T")


class Broker:
    """One app's connection pool and server-facing operations."""

    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self._client: Redis | RedisCluster | None = None
        self._channel: Channel | None = None
        self._pool: ConnectionPool | None = None
        self._sentinels: Any = None  # redis-py's Sentinel manager, for redis+sentinel://
        self._cluster: Any = None  # redis-py's RedisCluster, for redis+cluster://
        self._watch: PrimaryWatch | None = None
        self._own_channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self.url: str | None = None
        self.server_version: tuple[int, ...] = (0,)
        self.has_waitaof = False
        self.user = "default"  # the server user we connect as (from the URL)
        self.memory = MemoryGauge(settings, clock)
        self._lock = asyncio.Lock()

    @property
    def client(self) -> Any:  # redis-py's response types are too loose to be useful here
        if self._client is None:
            raise RuntimeError("not connected: await app.connect() (or use `async with app`)")
        return self._client

    @property
    def channel(self) -> Channel:
        """The shared pipelined connection for script calls (see :mod:`.channel`)."""
        if self._channel is None:
            raise RuntimeError("not connected: await app.connect() (or use `async with app`)")
        return self._channel

    def new_channel(self, blocks_for: float = 0.0) -> Channel:
        """A channel of its own (for a blocking read that may wait ``blocks_for`` seconds);
        closed with the broker."""
        timeout = self.settings.socket_timeout + blocks_for
        if self._cluster is not None:
            channel: Channel = ClusterChannel(self._cluster, timeout)
        elif self._pool is not None:
            channel = Channel(self._pool, timeout)
        else:
            raise RuntimeError("not connected: await app.connect() (or use `async with app`)")
        self._own_channels.add(channel)
        return channel

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self, *, needs_disk: bool = False,
                      replicated: Sequence[str] = ()) -> None:
        """Connect (starting the embedded server if no URL is set), check the server and
        load every script. ``needs_disk``: a queue asks for ``durability='disk'``;
        ``replicated``: the queues with ``durability='replicated'`` (on a Sentinel
        deployment, the primary's ``min-replicas-to-write`` is checked for them)."""
        async with self._lock:
            if self._client is not None:
                return
            url = self.settings.redis_url
            if url is not None and is_cluster_url(url):  # engine/cluster.py (TLS included)
                await self._connect_cluster(url, self._options(), needs_disk)
                return
            if url is None:
                from .embedded import ensure_server

                url = await asyncio.to_thread(ensure_server, self.settings.data_dir.resolve())
            # rediss+sentinel:// gets the same TLS options, for the sentinels and the data.
            plain_url, tls = connection_url(url, self.settings.security)
            options: dict[str, Any] = {
                "socket_timeout": self.settings.socket_timeout, "socket_connect_timeout": 2.0,
                "retry": RedisRetry(NoBackoff(), 0), "max_connections": 1024}
            if is_sentinel_url(url):  # the primary is asked of the sentinels on each connect
                pool, self._sentinels = sentinel_pool(url, tls, **options)
            else:
                pool = ConnectionPool.from_url(plain_url, **options, **tls)
            pool.connection_class = with_fast_packing(pool.connection_class)
            client = Redis.from_pool(pool)
            self.url = url
            self.user = pool.connection_kwargs.get("username") or "default"
            self._client, self._pool = client, pool
            self._channel = Channel(pool, self.settings.socket_timeout)
            try:
                await self.retrying(self._check_server, needs_disk)
            except BaseException:
                await self.close()
                raise
            if self._sentinels is not None:
                if replicated:
                    await self.retrying(check_min_replicas, self.client, list(replicated))
                self._watch = PrimaryWatch(self._sentinels, pool.service_name,  # type: ignore[attr-defined]
                                           self._primary_moved, self.clock)
                self._watch.start()

    def _options(self) -> dict[str, Any]:
        return {"socket_timeout": self.settings.socket_timeout, "socket_connect_timeout": 2.0,
                "max_connections": 1024}

    async def _connect_cluster(self, url: str, options: dict[str, Any],
                               needs_disk: bool) -> None:
        client = cluster_client(url, self.settings.security, **options)
        self.url, self._client, self._cluster = url, client, client
        self.user = client.nodes_manager.connection_kwargs.get("username") or "default"
        self._channel = ClusterChannel(client, self.settings.socket_timeout)
        try:
            await self.retrying(self._check_server, needs_disk)
        except BaseException:
            await self.close()
            raise

    async def _primary_moved(self) -> None:
        """Drop every connection (pending calls fail and are retried): the next ones go to
        the primary the sentinels name now."""
        for channel in [*self._own_channels, *([self._channel] if self._channel else [])]:
            channel.reset()
        if self._pool is not None:
            await self._pool.disconnect(inuse_connections=True)

    async def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.close()
        await self.memory.close()
        channel, self._channel = self._channel, None
        for own in [*self._own_channels, *([channel] if channel is not None else [])]:
            await own.aclose()
        self._own_channels.clear()
        self._pool = self._cluster = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        sentinels, self._sentinels = self._sentinels, None
        if sentinels is not None:
            await close_sentinels(sentinels)

    async def _check_server(self, needs_disk: bool) -> None:
        sections = ("server", "memory", "persistence")
        if self._cluster is not None:  # the slot map, before the channel routes by it
            await read_slot_map(self._cluster, self.user)
            # A cluster pipeline takes no INFO; this asks one primary (each is configured
            # alike: README, "Redis Cluster").
            info, memory, persistence = [await self.client.info(s) for s in sections]
        else:
            pipe = self.client.pipeline(transaction=False)
            for section in sections:
                pipe.info(section)
            info, memory, persistence = await pipe.execute()
        self.server_version = tuple(int(p) for p in str(info["redis_version"]).split(".")[:3])
        if self.server_version < (7, 0):
            raise ServerConfigError(f"Redis >= 7.0 (or Valkey >= 7.2) is required; server is "
                                    f"{info['redis_version']}")
        policy = memory.get("maxmemory_policy", "noeviction")
        if policy != "noeviction":
            raise ServerConfigError(
                f"the server's maxmemory-policy is {policy!r}: eviction silently deletes queued "
                "messages. Set `maxmemory-policy noeviction` on the server.")
        self.has_waitaof = self.server_version >= (7, 2)
        self.memory.update(memory)
        if needs_disk:
            await self._check_disk(int(persistence.get("aof_enabled", 0)) == 1)
        await LIBRARY.preload(self.channel)  # and opens the channel before the first call

    async def _check_disk(self, aof_enabled: bool) -> None:
        if not aof_enabled:
            raise ServerConfigError("a queue has durability='disk' but the server's append-only "
                                    "file is off; set `appendonly yes`")
        if self.has_waitaof:
            return
        try:
            fsync = (await self.client.config_get("appendfsync")).get("appendfsync")
        except ResponseError as exc:
            raise_if_denied(exc, self.user, "CONFIG GET appendfsync, for durability='disk'")
            raise ServerConfigError("durability='disk' needs WAITAOF (Redis >= 7.2) or a "
                                    f"readable `appendfsync always`: {exc}") from None
        if fsync != "always":
            raise ServerConfigError(
                f"durability='disk' on a server without WAITAOF needs `appendfsync always`; "
                f"the server has {fsync!r}")

    async def ensure_groups(self, lane_keys: Sequence[str]) -> None:
        """Create the consumer group of each lane stream (and the stream) if missing.

        A full server refuses XGROUP CREATE even where the group exists; a worker must
        start there all the same (draining is what frees memory), so the group is looked
        up instead, and only a queue that never had one waits for room.
        """
        pipe = self.client.pipeline(transaction=False)  # the usual case: one round trip
        for lane_key in lane_keys:
            pipe.xgroup_create(lane_key, GROUP, id="0", mkstream=True)
        replies = await pipe.execute(raise_on_error=False)
        for lane_key, reply in zip(lane_keys, replies, strict=True):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                await self._ensure_group(lane_key)  # raises what is not a full server

    async def _ensure_group(self, lane_key: str) -> None:
        waited = 0
        while True:
            try:
                await self.client.xgroup_create(lane_key, GROUP, id="0", mkstream=True)
                return
            except OutOfMemoryError:
                if await self._has_group(lane_key):
                    return
                if waited == 0:
                    log.warning("server memory is full: waiting for room to create the "
                                "consumer group of %s", lane_key)
                waited += 1
                await self.clock.sleep(min(2.0, self.settings.connect_backoff * waited))
            except ResponseError as exc:
                raise_if_denied(exc, self.user, f"XGROUP CREATE {lane_key}")
                if "BUSYGROUP" not in str(exc):
                    raise
                return

    async def _has_group(self, lane_key: str) -> bool:
        try:
            groups = await self.client.xinfo_groups(lane_key)
        except ResponseError:  # no such stream
            return False
        return any(text(g.get("name", b"")) == GROUP for g in groups)

    async def retrying(self, op: Callable[..., Awaitable[T]], *args: Any,
                       already_failed: int = 0) -> T:
        """Run ``op``; on connection trouble retry with backoff a bounded number of times."""
        attempts = self.settings.connect_retries + 1
        for attempt in range(already_failed, attempts):
            try:
                return await op(*args)
            except ResponseError as exc:
                if not unwritable(exc):
                    raise_if_denied(exc, self.user, _what(op))
                    raise
                failure: Exception = exc
            except TRANSIENT as exc:
                failure = exc
            if attempt == attempts - 1:
                raise BrokerUnavailableError(
                    f"server unreachable after {attempts} attempts: {failure}") from failure
            pause = min(2.0, self.settings.connect_backoff * 2**attempt)
            await self.clock.sleep(pause * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:  # the first try without the retry machinery: this is the publish hot path
            return await script(self.channel, keys, args)
        except ResponseError as exc:
            if not unwritable(exc):
                raise_if_denied(exc, self.user, f"script {script.name} on {keys[0]}")
                raise
            failure: Exception = exc
        except TRANSIENT as exc:
            failure = exc
        if self.settings.connect_retries == 0:
            raise BrokerUnavailableError(f"server unreachable: {failure}") from failure
        await self.clock.sleep(self.settings.connect_backoff)
        return await self.retrying(script, self.channel, keys, args, already_failed=1)

    async def run(self, call: ScriptCall) -> Any:
        """Run one script call (see :meth:`call`)."""
        return await self.call(*call)

    def confirms(self, durability: Durability) -> bool:
        """Whether a publish with ``durability`` waits for a confirmation after it."""
        return durability is Durability.REPLICATED or (
            durability is Durability.DISK and self.has_waitaof)

    async def publish(self, queue: str, call: ScriptCall, durability: Durability,
                      timeout: float, ids: list[str] | None = None) -> Any:
        """Run a publishing script call and wait for ``durability`` (see the README).

        ``ids``: the ids the script writes, for a DurabilityError (publish.lua returns them).
        Raises QueueFullError when the server's memory is (nearly) full; waits a little
        first when it is getting there (see :mod:`.memory`).
        """
        delay = self.memory.delay(queue, self.client)
        if delay:
            await self.clock.sleep(delay)
        try:
            if not self.confirms(durability):
                return await self.call(*call)
            replies = await self.retrying(self._publish_pipelined, [call], durability, timeout,
                                          ids, ())
        except OutOfMemoryError as exc:
            raise QueueFullError(queue, "server_memory", RETRY_AFTER_FULL,
                                 detail=str(exc).rstrip(".")) from None
        return replies[0]

    async def publish_pipelined(self, queue: str, calls: Sequence[ScriptCall],
                                durability: Durability, timeout: float,
                                ids: list[str] | None = None,
                                after: Sequence[tuple[Any, ...]] = ()) -> list[Any]:
        """Several publishing calls in one round trip, then one confirmation of them all.

        ``after``: plain commands sent behind them (a wake-up entry, say). Not retried
        here: a caller that sends a run of them resumes by its own cursor. Backpressure
        and QueueFullError as for :meth:`publish`.
        """
        delay = self.memory.delay(queue, self.client)
        if delay:
            await self.clock.sleep(delay)
        try:
            return await self._publish_pipelined(calls, durability, timeout, ids, after)
        except OutOfMemoryError as exc:
            raise QueueFullError(queue, "server_memory", RETRY_AFTER_FULL,
                                 detail=str(exc).rstrip(".")) from None

    async def _publish_pipelined(self, calls: Sequence[ScriptCall], durability: Durability,
                                 timeout: float, ids: list[str] | None,
                                 after: Sequence[tuple[Any, ...]]) -> list[Any]:
        confirm = self.confirms(durability)
        timeout_ms = int(timeout * 1000)
        commands = list(after)
        if confirm:
            commands.append(("WAITAOF", 1, 0, timeout_ms) if durability is Durability.DISK
                            else ("WAIT", 1, timeout_ms))
        replies = await run_pipelined(self.channel, calls, commands)
        if after:
            del replies[len(calls):len(calls) + len(after)]
        if confirm:
            confirmed = replies.pop()
            ok = confirmed[0] >= 1 if durability is Durability.DISK else confirmed >= 1
            if not ok:
                ids = ids if ids is not None else [text(r[0]) for r in replies[0]]
                raise DurabilityError(
                    f"{durability.value} durability not confirmed within {timeout}s "
                    f"(confirmation: {confirmed}); the message may exist: publish again with "
                    "the same idempotency key", ids)
        return replies


def unwritable(exc: ResponseError) -> bool:
    """The server refused a write it did not make, for as long as a failover takes: a
    primary demoted under us (READONLY; the connection was dropped, so the retry asks the
    sentinels again) or one cut off from its replicas (NOREPLICAS, min-replicas-to-write).
    Retried like an outage."""
    return isinstance(exc, ReadOnlyError) or str(exc).startswith("NOREPLICAS")


def _what(op: Any) -> str:
    """What ``op`` does, for an error message: a script's name, else the function's."""
    name = getattr(op, "name", None) if isinstance(op, Script) else None
    return f"script {name}" if name else getattr(op, "__name__", type(op).__name__).lstrip("_")
