"""A planned switch of the Sentinel-managed primary that loses no confirmed write.

``SENTINEL FAILOVER`` alone loses writes: the old primary accepts them until the sentinels
demote it, seconds after the promotion, and the promotion discards them (README, High
availability). :func:`switchover` closes that window:

1. ``CLIENT PAUSE <ms> WRITE`` on the old primary: every client's writes wait there
   (reads, and the replication stream, go on);
2. wait until every replica has acknowledged the primary's whole replication offset;
3. ``SENTINEL FAILOVER``, and wait until the sentinels name another primary;
4. ``REPLICAOF`` the new primary on the old one (what the sentinels would do some
   seconds later), so the writes still waiting there fail with ``READONLY`` instead of
   landing on a primary nobody follows; tidings' clients retry them on the new primary
   (``PrimaryWatch`` has moved them there already);
5. ``CLIENT UNPAUSE``, in every case: a switch that fails leaves the old primary in
   charge and writable.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from ..core.errors import BrokerUnavailableError
from ..core.sentinel import parse_sentinel_url
from .sentinel import close_sentinels, sentinel_pool

POLL = 0.05  # seconds between looks at the replicas and the sentinels


@dataclass(frozen=True)
class Switchover:
    """What a switchover did: the old and new primary and how long writes waited."""

    old: tuple[str, int]
    new: tuple[str, int]
    writes_paused_s: float


async def switchover(url: str, *, timeout: float = 30.0,
                     tls: dict[str, Any] | None = None) -> Switchover:
    """Move the primary of the ``redis+sentinel://`` deployment ``url`` to a replica.

    Writes of every client wait (they are not refused) for the switch; ``timeout`` bounds
    it, and the pause. ``tls``: the TLS options of a ``rediss+sentinel://`` deployment
    (``engine.tls.connection_url``). Raises :class:`BrokerUnavailableError` if the sentinels did not
    promote a replica in time (the old primary is then unpaused and still the primary).
    """
    target = parse_sentinel_url(url)
    pool, manager = sentinel_pool(url, tls, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        host, port = await manager.discover_master(target.service)  # type: ignore[no-untyped-call]
        old = (str(host), int(port))
        secure: dict[str, Any] = {"ssl": True, **tls} if tls else {}
        primary: Any = Redis(host=old[0], port=old[1], db=target.db, socket_timeout=5.0,
                             username=target.username, password=target.password, **secure)
        async with primary:
            deadline = time.monotonic() + timeout
            paused_at = time.monotonic()
            await primary.execute_command("CLIENT", "PAUSE", int(timeout * 1000), "WRITE")
            try:
                await _until(lambda: _replicas_caught_up(primary), deadline,
                             "the replicas to catch up with the primary")
                sentinel: Any = manager.sentinels[0]
                await sentinel.execute_command("SENTINEL", "FAILOVER", target.service)
                new = await _until(lambda: _moved(manager, target.service, old), deadline,
                                   "the sentinels to promote a replica")
                await primary.execute_command("REPLICAOF", new[0], new[1])
            finally:
                await primary.execute_command("CLIENT", "UNPAUSE")
            return Switchover(old, new, round(time.monotonic() - paused_at, 3))
    finally:
        await pool.disconnect()
        await close_sentinels(manager)


async def _replicas_caught_up(primary: Any) -> bool:
    info: dict[str, Any] = await primary.info("replication")
    offset = int(info["master_repl_offset"])
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    return bool(replicas) and all(int(r["offset"]) >= offset for r in replicas)


async def _moved(manager: Any, service: str, old: tuple[str, int]) -> tuple[str, int] | None:
    host, port = await manager.discover_master(service)
    return None if (str(host), int(port)) == old else (str(host), int(port))


async def _until(check: Any, deadline: float, what: str) -> Any:
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"switchover abandoned: timed out waiting for {what}")
        await asyncio.sleep(POLL)
