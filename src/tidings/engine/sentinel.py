"""The connection pool for a primary found through Redis Sentinel (redis-py's discovery).

redis-py's :class:`~redis.asyncio.sentinel.SentinelConnectionPool` asks the sentinels for
the primary's address every time one of its connections connects, and its connections
turn a READONLY reply (a primary demoted under us) into a ConnectionError after
disconnecting. The channel (:mod:`.channel`) opens connections of the pool's own class with
the pool's arguments, so it gets the same discovery on every reconnect; it drops its
connection on READONLY itself, since it reads replies without redis-py's reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from ..core.clock import Clock
from ..core.errors import AuthenticationFailedError, UntrustedCertificateError
from ..core.sentinel import SentinelTarget, parse_sentinel_url
from .connection import _untrusted_certificate

log = logging.getLogger("tidings.engine")


class _Sentinels(Sentinel):
    """redis-py's Sentinel, with its "no primary found" error made short and typed.

    redis-py skips a sentinel that refuses our password, or whose TLS certificate we do not
    trust, as it skips one that is down, then reports every sentinel client's full repr.
    A refusal is not an outage: it is raised as AuthenticationFailedError or
    UntrustedCertificateError (never retried); anything else as a one-line
    MasterNotFoundError (a ConnectionError, so every loop retries it through a failover).
    """

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            pass
        for client in self.sentinels:  # only after a failure: which sentinel said what
            try:
                await client.ping()
            except AuthenticationError as exc:
                raise AuthenticationFailedError(
                    "sentinel", f"{exc}; check sentinel_password (and sentinel_username) in "
                    "TIDINGS_REDIS_URL") from None
            except (RedisError, OSError) as exc:
                certificate = _untrusted_certificate(exc)
                if certificate is not None:
                    kwargs = client.connection_pool.connection_kwargs
                    raise UntrustedCertificateError(
                        f"sentinel {kwargs.get('host')}:{kwargs.get('port')}",
                        certificate) from None
                continue
        raise MasterNotFoundError(f"no sentinel of {len(self.sentinels)} named a primary "
                                  f"for {service_name!r}") from None


def sentinel_pool(url: str, tls: dict[str, Any] | None = None,
                  **options: Any) -> tuple[ConnectionPool, Sentinel]:
    """A pool for the primary named in ``url``, and the sentinel manager (to close it).

    ``options`` are the data connections' arguments (timeouts, retry, max_connections);
    the sentinels get the same timeouts and their own credentials. ``tls``: the TLS
    options (engine/tls.py) of a ``rediss+sentinel://`` URL, for both.
    """
    target: SentinelTarget = parse_sentinel_url(url)
    if tls:
        options = {**options, "ssl": True, **tls}
    socket = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl"))}
    # One try per sentinel per discovery: the callers' loops do the retrying, with backoff.
    sentinel_kwargs: dict[str, Any] = {**socket, "retry": Retry(NoBackoff(), 0)}
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    manager = _Sentinels(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.service, manager, db=target.db, username=target.username,
        password=target.password, **options)
    return pool, manager


async def close_sentinels(manager: Sentinel) -> None:
    """Close the connections to the sentinels themselves."""
    for client in manager.sentinels:
        await client.aclose()


class PrimaryWatch:
    """Asks the sentinels for the primary every ``every`` seconds; on a change, ``moved()``.

    A connection finds the primary only when it connects, and a primary demoted by a manual
    ``SENTINEL FAILOVER`` or cut off by a partition keeps its connections and accepts
    writes until the sentinels demote it (about ten seconds later), writes the promotion
    then discards. The broker drops every connection as soon as the sentinels name another
    primary, so its next call goes there. After a crash this only confirms what the broken
    connections already forced.
    """

    def __init__(self, manager: Sentinel, service: str, moved: Callable[[], Awaitable[None]],
                 clock: Clock, every: float = 0.5) -> None:
        self._manager, self._service, self._moved = manager, service, moved
        self._clock, self._every = clock, every
        self._task: asyncio.Task[None] | None = None
        self.seen: Any = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                address = await self._manager.discover_master(self._service)  # type: ignore[no-untyped-call]
            except (RedisError, OSError, AuthenticationFailedError, UntrustedCertificateError):
                address = None  # no sentinel answers: the connections' own errors tell
            if address is not None:
                if self.seen is not None and address != self.seen:
                    log.warning("the sentinels name a new primary for %r; reconnecting",
                                self._service)
                    await self._moved()
                self.seen = address
            await self._clock.sleep(self._every)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def check_min_replicas(client: Any, queues: list[str]) -> int | None:
    """Warn when ``replicated`` queues run on a primary without ``min-replicas-to-write``.

    A warning, not an error: ``replicated`` still survives a crash of the primary without
    it, and managed services often forbid ``CONFIG``. What it guards is a partition: a
    primary cut off from its replicas but not from some clients keeps accepting writes
    (``memory`` ones confirmed, ``replicated`` ones refused by ``WAIT``) that the
    promotion of a replica then discards; ``min-replicas-to-write 1`` makes it refuse them
    after ``min-replicas-max-lag`` seconds. Returns the setting, or None if unreadable.
    """
    try:
        reply = await client.config_get("min-replicas-to-write")
        value = int(reply.get("min-replicas-to-write", 0))
    except (ResponseError, ValueError) as exc:
        log.info("could not read min-replicas-to-write on the primary (%s); for "
                 "durability='replicated' set it to 1 on every data server", exc)
        return None
    if value < 1:
        log.warning("queues %s have durability='replicated' but the primary has "
                    "min-replicas-to-write %d: when a partition cuts it off from its "
                    "replicas it keeps accepting writes the failover then discards. Set "
                    "`min-replicas-to-write 1` and `min-replicas-max-lag 10` on every data "
                    "server (README, High availability)", ", ".join(queues), value)
    return value
