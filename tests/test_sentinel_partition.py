"""A network partition of the Sentinel-managed primary: ``replicated`` loses nothing.

The primary's replicas and the sentinels reach it only through a fault proxy
(fault_proxy.py); its clients too, but the partition cuts only the deployment's own
links: the clients go on reaching the old primary, the split-brain case. The data servers
have ``min-replicas-to-write 1`` and ``min-replicas-max-lag 2``. While the sentinels
promote a replica, the old primary keeps accepting writes for up to the max lag, then
refuses them (NOREPLICAS, retried by tidings like an outage); ``PrimaryWatch`` moves the
clients to the new primary; the healed old primary is demoted and discards what it took.

* ``replicated`` (WAIT 1): a publish on the isolated primary is never confirmed (no
  replica acknowledges it), so every confirmed one is on the new primary: 0 lost;
* ``memory``: what the isolated primary accepted before refusing is lost; counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import new_prefix
from failover_run import Producer
from fault_helpers import poll, text
from fault_proxy import FaultProxy
from sentinels import SentinelDeployment
from tidings import Tidings

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers


async def partitionable(workdir: Path) -> tuple[SentinelDeployment, FaultProxy]:
    """A primary behind a proxy, two replicas and three sentinels that reach it through
    the proxy (so the sentinels also announce the proxy's address to clients)."""
    deployment = SentinelDeployment(workdir, min_replicas=1)
    primary = await asyncio.to_thread(deployment.start_data)
    proxy = await FaultProxy(primary.port).start()
    try:
        for _ in range(2):
            await asyncio.to_thread(deployment.start_data, proxy.port)
        for _ in range(3):
            await asyncio.to_thread(deployment.start_sentinel, proxy.port)
        await asyncio.to_thread(deployment.wait_ready, 2)
    except BaseException:
        deployment.stop()
        await proxy.close()
        raise
    return deployment, proxy


@pytest.mark.timeout(180)
async def test_a_partitioned_primary_loses_no_replicated_publish(
        tmp_path: Path, report: Callable[[str], None]) -> None:
    deployment, proxy = await partitionable(tmp_path)
    old = deployment.data[0]
    app = Tidings(deployment.url, key_prefix=new_prefix())
    replicated = app.queue("ha-replicated", durability="replicated", durability_timeout=1.0)
    memory = app.queue("ha-memory")
    producers = [Producer(replicated), Producer(memory)]
    tasks: list[asyncio.Task[None]] = []
    try:
        await app.connect()
        tasks = [asyncio.create_task(p.run()) for p in producers]
        await poll(lambda: _each(producers, 200), 60, "publishes before the partition")
        proxy.partition()

        async def promoted() -> bool:
            return await asyncio.to_thread(deployment.primary_port) != proxy.port

        await poll(promoted, 60, "the sentinels to promote a replica", deployment.logs)
        marks = [len(p.confirmed) for p in producers]
        await poll(lambda: _each(producers, 200, marks), 60, "publishes on the new primary",
                   lambda: f"; {[t.done() and t.exception() for t in tasks]}")
        proxy.heal()

        async def demoted() -> bool:
            info = await asyncio.to_thread(lambda: old.client().info("replication"))
            return text(info["role"]) == "slave"

        await poll(demoted, 60, "the old primary to be demoted", deployment.logs)
        for p in producers:
            p.stop = True
        await asyncio.gather(*tasks)
        lost = {}
        for q, p in zip((replicated, memory), producers, strict=True):
            kept = {text(k) for k in await app.broker.client.hkeys(q.keys.index)}
            lost[q.name] = len(set(p.confirmed) - kept)
        report(f"partition of the primary (min-replicas-to-write 1, max lag 2 s): confirmed "
               f"{len(producers[0].confirmed)} replicated + {len(producers[1].confirmed)} "
               f"memory; lost {lost}; publishing gap {producers[0].longest_gap():.1f}s / "
               f"{producers[1].longest_gap():.1f}s; publish retries "
               f"{[p.failures for p in producers]}; {proxy.dropped} chunks dropped")
        assert lost["ha-replicated"] == 0, "a confirmed replicated publish was lost"
    finally:
        for p in producers:
            p.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.close()
        deployment.stop()
        await proxy.close()


async def _each(producers: list[Producer], more: int, marks: list[int] | None = None) -> bool:
    marks = marks or [0] * len(producers)
    return all(len(p.confirmed) >= m + more for p, m in zip(producers, marks, strict=True))
