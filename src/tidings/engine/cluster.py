"""Redis Cluster: redis-py's RedisCluster for ordinary commands, a per-slot channel for hot ones.

Every key of one queue carries the queue's hash tag (``core/keys.py``), so each script call
touches one slot and goes whole to the primary serving it. :class:`ClusterChannel` keeps
one pipelined :class:`~.channel.Channel` per primary and picks it from the slot of the
call's first key, with the slot map of the RedisCluster client (``CLUSTER SLOTS``, read at
connect). A ``MOVED`` reply (the slot was resharded) records the new owner and sends the
call there; ``ASK`` (the slot is being migrated and the keys are not here) sends it once to
the importing node behind ``ASKING``; ``TRYAGAIN`` (the keys are split between the two
during a migration) waits a moment and sends it again. A connection error re-reads the slot
map, so a failover's new primary is found. Script loading (``SCRIPT LOAD`` / ``EXISTS``) goes
to every primary.

Measured (``python -m bench.cluster``): 3 to 4.5 times the publishes per second of
RedisCluster's own ``execute_command`` and pipelines put in its place (those are the plain
redis-py call path plus a slot lookup).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.cluster import parse_cluster_url
from ..core.errors import ConfigError, UntrustedCertificateError
from ..core.security_settings import SecuritySettings
from .channel import Arg, Channel, ChannelPipeline, _pack
from .connection import TRANSIENT, _untrusted_certificate, refusal_of, with_fast_packing
from .tls import tls_options

log = logging.getLogger("tidings.engine")

# Redirections followed for one call before giving up: with TRYAGAIN's waits, about 5 s, a
# slow MIGRATE of a slot with many keys (a queue's keys are split between two nodes meanwhile).
MAX_REDIRECTS = 64
_SCRIPTED = frozenset({"EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"})
_STREAMS = frozenset({"XREAD", "XREADGROUP"})
_KEYLESS = frozenset({"SCRIPT", "WAIT", "WAITAOF", "PING", "INFO", "TIME", "CLIENT",
                      "CONFIG", "CLUSTER", "COMMAND", "ECHO", "DBSIZE", "MEMORY", "SLOWLOG"})
_slots: dict[Any, int] = {}


def slot_of(key: Arg) -> int:
    """The cluster slot of ``key`` (its hash tag's, if it has one)."""
    slot = _slots.get(key)
    if slot is None:
        raw = key.encode() if isinstance(key, str) else bytes(key)  # type: ignore[arg-type]
        slot = key_slot(raw)
        if len(_slots) > 100_000:  # keys are mostly a queue's few, reused: a bounded memo
            _slots.clear()
        _slots[key] = slot
    return slot


def command_keys(args: Sequence[Arg]) -> list[Arg]:
    """The keys of a command tidings sends (scripts, stream reads, single-key commands)."""
    name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
    name = name.upper()
    if name in _SCRIPTED:
        count = int(args[2])  # type: ignore[arg-type]
        return list(args[3:3 + count])
    if name in _STREAMS:
        upper = [a.upper() if isinstance(a, str) else a for a in args]
        start = upper.index("STREAMS") + 1
        return list(args[start:start + (len(args) - start) // 2])
    if name in _KEYLESS or len(args) < 2:
        return []
    return [args[1]]


def command_slot(args: Sequence[Arg]) -> int | None:
    name = args[0]
    if name == "EVALSHA" and int(args[2]) > 0:  # type: ignore[arg-type]  # the hot path
        return slot_of(args[3])
    keys = command_keys(args)
    return slot_of(keys[0]) if keys else None


def _redirect(error: BaseException) -> tuple[str, int, str] | None:
    """(kind, slot, "host:port") of a MOVED / ASK reply; (kind, -1, "") for TRYAGAIN and
    CLUSTERDOWN; None for any other reply."""
    if isinstance(error, (MovedError, AskError)):  # AskError is a MovedError's base
        kind = "MOVED" if isinstance(error, MovedError) else "ASK"
        return kind, int(error.slot_id), f"{error.host}:{error.port}"
    if isinstance(error, TryAgainError):
        return "TRYAGAIN", -1, ""
    if isinstance(error, ClusterDownError):
        return "CLUSTERDOWN", -1, ""
    if isinstance(error, ResponseError):  # redis-py < 5.1 parses these as plain errors
        words = str(error).split()
        if len(words) == 3 and words[0] in ("MOVED", "ASK"):
            return words[0], int(words[1]), words[2]
        if words and words[0] in ("TRYAGAIN", "CLUSTERDOWN"):
            return words[0], -1, ""
    return None


def cluster_client(url: str, security: SecuritySettings, **options: Any) -> RedisCluster:
    """A RedisCluster for the seed nodes of ``url`` (not connected: ``await initialize()``).

    ``options``: socket timeouts, retry, max_connections, as for a pool.
    """
    target = parse_cluster_url(url)
    host, port = target.nodes[0]
    tls: dict[str, Any] = {}
    if target.tls:
        tls = tls_options(f"rediss://{host}:{port}", security)
        if tls.pop("ssl_password", None) is not None:
            raise ConfigError("TIDINGS_SECURITY__TLS_KEY_PASSWORD",
                              "an encrypted client key is not supported with a cluster yet")
        tls["ssl"] = True
    elif any(getattr(security, n) for n in ("tls_ca_file", "tls_cert_file", "tls_key_file")):
        tls_options(url, security)  # raises: a certificate setting without TLS
    from redis.asyncio.cluster import ClusterNode

    seeds = [ClusterNode(h, p) for h, p in target.nodes]
    options.pop("retry", None)  # RedisCluster keeps its own (it follows MOVED with it)
    client = RedisCluster(startup_nodes=seeds, username=target.username,
                          password=target.password, **options, **tls)
    manager = client.nodes_manager
    packed = with_fast_packing(manager.connection_kwargs["connection_class"])
    manager.connection_kwargs["connection_class"] = packed
    for node in manager.startup_nodes.values():
        node.connection_class = packed
    return client


async def read_slot_map(client: RedisCluster, user: str) -> None:
    """Read the slot map from the seed nodes (at connect).

    redis-py reports every failure to reach a seed as one RedisClusterException; a refused
    password or an untrusted certificate is turned into tidings' typed error (not retried),
    anything else into a ConnectionError (retried, like a server that is down).
    """
    try:
        await client.initialize()
    except RedisClusterException as exc:
        refusal = refusal_of(exc, user, "connecting")
        if refusal is not None:
            raise refusal from exc
        certificate = _untrusted_certificate(exc)
        if certificate is not None:
            seeds = ",".join(n.name for n in client.nodes_manager.startup_nodes.values())
            raise UntrustedCertificateError(seeds, certificate) from exc
        raise RedisConnectionError(f"no cluster node answered: {exc}") from exc


class _Address:
    """What a Channel needs of a pool: a connection class and its arguments."""

    def __init__(self, cluster: RedisCluster, name: str) -> None:
        kwargs = dict(cluster.nodes_manager.connection_kwargs)
        self.connection_class = kwargs.pop("connection_class")
        for unused in ("max_connections", "response_callbacks"):
            kwargs.pop(unused, None)
        host, _, port = name.rpartition(":")
        self.connection_kwargs = {**kwargs, "host": host, "port": int(port)}


class ClusterChannel(Channel):
    """Pipelined channels to every primary, each call sent to its slot's (see the module)."""

    def __init__(self, cluster: RedisCluster, timeout: float) -> None:
        super().__init__(None, timeout)
        self._cluster = cluster
        self._nodes: dict[str, Channel] = {}
        self._moved: dict[int, str] = {}  # slot -> "host:port", from MOVED replies
        self._refreshing: asyncio.Future[None] | None = None
        self.redirects: Counter[str] = Counter()  # MOVED, ASK, TRYAGAIN ... followed

    def address(self, slot: int) -> str:
        """The "host:port" of the primary serving ``slot``, as far as we know."""
        moved = self._moved.get(slot)
        if moved is not None:
            return moved
        return str(self._cluster.nodes_manager.get_node_from_slot(slot).name)

    def node(self, name: str) -> Channel:
        channel = self._nodes.get(name)
        if channel is None:
            if self._closed:
                raise RedisConnectionError("the channel is closed")
            channel = self._nodes[name] = Channel(_Address(self._cluster, name), self._timeout)
        return channel

    def primaries(self) -> list[str]:
        names = {n.name for n in self._cluster.get_primaries()}
        return sorted(names | set(self._moved.values()))

    def execute_command(self, *args: Arg) -> Awaitable[Any]:
        return self.call(args)

    async def call(self, args: Sequence[Arg]) -> Any:
        """Send one command to its slot's primary, following redirections."""
        slot = command_slot(args)
        if slot is None:
            return await self._keyless(args)
        ask: str | None = None
        for attempt in range(MAX_REDIRECTS):
            try:
                if ask is not None:
                    pipe = self.node(ask).pipeline()
                    pipe.execute_command("ASKING").execute_command(*args)
                    return (await pipe.execute())[1]
                return await self.node(self.address(slot)).execute_command(*args)
            except TRANSIENT:
                self.refresh()
                raise
            except ResponseError as exc:
                redirect = _redirect(exc)
                if redirect is None or attempt == MAX_REDIRECTS - 1:
                    raise
                ask = await self._follow(redirect, attempt)
        raise AssertionError("unreachable")

    async def _follow(self, redirect: tuple[str, int, str], attempt: int) -> str | None:
        """Act on a redirection; the node to ASK, if that is what it said."""
        kind, slot, where = redirect
        self.redirects[kind] += 1
        if kind == "MOVED":
            self._moved[slot] = where
            return None
        if kind == "ASK":
            return where
        await asyncio.sleep(min(0.1, 0.005 * (attempt + 1)))  # TRYAGAIN, CLUSTERDOWN: wait
        return None

    async def _keyless(self, args: Sequence[Arg]) -> Any:
        name = (args[0].decode() if isinstance(args[0], bytes) else str(args[0])).upper()
        if name != "SCRIPT":
            return await self.node(self.primaries()[0]).execute_command(*args)
        replies = await asyncio.gather(*(self.node(n).execute_command(*args)
                                         for n in self.primaries()))
        if str(args[1]).upper() == "EXISTS":  # known only where every primary has it
            return [min(int(r[i]) for r in replies) for i in range(len(replies[0]))]
        return replies[0]

    def refresh(self) -> None:
        """Read the slot map again, in the background (once at a time)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        try:
            await self._cluster.nodes_manager.initialize()
            self._moved.clear()
        except (*TRANSIENT, ResponseError) as exc:
            log.warning("reading the cluster's slot map failed: %s", exc)

    def pipeline(self, transaction: bool = False) -> ChannelPipeline:
        if transaction:
            raise ValueError("a channel pipeline is never a transaction")
        return ClusterPipeline(self)

    async def send_many(self, packed: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        raise NotImplementedError("a cluster channel sends commands, not packed bytes")

    def reset(self) -> None:
        for channel in self._nodes.values():
            channel.reset()

    async def aclose(self) -> None:
        self._closed = True
        refreshing, self._refreshing = self._refreshing, None
        if refreshing is not None:
            refreshing.cancel()
            await asyncio.gather(refreshing, return_exceptions=True)
        for channel in list(self._nodes.values()):
            await channel.aclose()


class ClusterPipeline(ChannelPipeline):
    """Commands grouped by primary, one write to each, replies back in the callers' order.

    A command without a key (WAIT after a publish) goes with the one before it; SCRIPT
    commands go to every primary. A redirected reply is sent again on its own.
    """

    __slots__ = ("_commands",)

    def __init__(self, channel: ClusterChannel) -> None:
        super().__init__(channel)
        self._commands: list[tuple[Arg, ...]] = []

    def execute_command(self, *args: Arg) -> ChannelPipeline:
        self._commands.append(args)
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self._commands = self._commands, []
        channel: ClusterChannel = self._channel  # type: ignore[assignment]
        replies: list[Any] = [None] * len(commands)
        groups: dict[str, list[int]] = {}
        alone: list[int] = []
        last: str | None = None
        for i, args in enumerate(commands):
            slot = command_slot(args)
            if slot is None and str(args[0]).upper() == "SCRIPT":
                alone.append(i)
                continue
            last = channel.address(slot) if slot is not None else (last or channel.primaries()[0])
            groups.setdefault(last, []).append(i)
        try:
            sent = await asyncio.gather(*(
                channel.node(name).send_many([_pack(commands[i]) for i in indexes])
                for name, indexes in groups.items()))
        except TRANSIENT:
            channel.refresh()  # a primary gone: its replica may be serving its slots now
            raise
        for indexes, futures in zip(groups.values(), sent, strict=True):
            got = await asyncio.gather(*futures, return_exceptions=True)
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = reply
        for i, reply in enumerate(replies):
            if i in alone or (isinstance(reply, Exception) and _redirect(reply) is not None):
                try:
                    replies[i] = await channel.call(commands[i])
                except ResponseError as exc:
                    replies[i] = exc
        for reply in replies:
            if isinstance(reply, (RedisConnectionError, RedisTimeoutError)):
                channel.refresh()
                raise reply
            if raise_on_error and isinstance(reply, Exception):
                raise reply
        return replies
