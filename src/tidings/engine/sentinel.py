"""The connection pool for a primary found through Redis Sentinel (redis-py's discovery).

redis-py's :class:`~redis.asyncio.sentinel.SentinelConnectionPool` asks the sentinels for
the primary's address every time one of its connections connects, and its connections
turn a READONLY reply (a primary demoted under us) into a ConnectionError after
disconnecting. The channel (:mod:`.channel`) opens connections of the pool's own class with
the pool's arguments, so it gets the same discovery on every reconnect; it drops its
connection on READONLY itself, since it reads replies without redis-py's reader.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from ..core.sentinel import SentinelTarget, parse_sentinel_url


def sentinel_pool(url: str, **options: Any) -> tuple[ConnectionPool, Sentinel]:
    """A pool for the primary named in ``url``, and the sentinel manager (to close it).

    ``options`` are the data connections' arguments (timeouts, retry, max_connections);
    the sentinels get the same timeouts and their own credentials.
    """
    target: SentinelTarget = parse_sentinel_url(url)
    socket = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_kwargs: dict[str, Any] = dict(socket)
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    manager = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.service, manager, db=target.db, username=target.username,
        password=target.password, **options)
    return pool, manager


async def close_sentinels(manager: Sentinel) -> None:
    """Close the connections to the sentinels themselves."""
    for client in manager.sentinels:
        await client.aclose()
