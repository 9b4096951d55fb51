"""One kill -9 of the Sentinel-managed primary under steady load, measured.

Shared by tests/test_sentinel_failover.py (one run, asserts) and ``python -m
bench.failover`` (N runs, min / median / max). A primary, two replicas and three sentinels
(sentinels.py); two ``tidings worker`` processes (tests/apps/fault_app.py), one per queue,
that record every message they finish on a separate server (the ledger) the failover does
not touch; two producers publishing continuously, each publish retried with its
idempotency key until it is confirmed. The primary is killed with SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from conftest import new_prefix
from fault_helpers import WorkerProcs, consumer_of, is_settled, poll, text
from sentinels import redis_server, start_deployment
from servers import private_server
from tidings import BrokerUnavailableError, DurabilityError, Queue, Tidings

BEFORE, AFTER = 300, 300  # confirmed publishes per producer before the kill / after recovery


@dataclass
class Producer:
    """Publishes {"n": n} with idempotency key <queue>-<n>, retrying until confirmed."""

    q: Queue
    confirmed: dict[str, float] = field(default_factory=dict)  # message id -> confirmed at
    failures: int = 0
    stop: bool = False

    async def run(self) -> None:
        n = 0
        while not self.stop:
            while True:
                try:
                    mid = await self.q.publish({"n": n}, idempotency_key=f"{self.q.name}-{n}")
                    break
                except (BrokerUnavailableError, DurabilityError):
                    self.failures += 1  # the outage: publish the same message again
                    await asyncio.sleep(0.05)
            self.confirmed[mid] = time.monotonic()
            n += 1
            await asyncio.sleep(0.002)  # a steady stream, not a flood: ~ 300/s

    def longest_gap(self) -> float:
        """The longest time between two confirmations: how long publishing was down."""
        times = sorted(self.confirmed.values())
        return max(b - a for a, b in itertools.pairwise(times))

    def after(self, moment: float) -> set[str]:
        return {mid for mid, at in self.confirmed.items() if at > moment}


async def failover_once(workdir: Path, workers: WorkerProcs) -> dict[str, Any]:
    """Kill -9 the primary under load once; the measures (seconds, counts) of that run."""
    prefix = new_prefix()
    with private_server(redis_server()) as ledger_port:
        ledger = Redis(port=ledger_port)
        deployment = start_deployment(workdir)
        app = Tidings(deployment.url, key_prefix=prefix)
        replicated = app.queue("ha-replicated", durability="replicated",
                               durability_timeout=1.0, visibility_timeout=2)
        memory = app.queue("ha-memory", visibility_timeout=2)
        producers = [Producer(replicated), Producer(memory)]
        tasks: list[asyncio.Task[None]] = []
        try:
            await app.connect()
            procs = []
            for q in (replicated, memory):
                env = workers.env(app, deployment.url, vt=2, concurrency=16,
                                  ledger_url=f"redis://127.0.0.1:{ledger_port}/0")
                env["FAULT_QUEUE"] = q.name
                procs.append(workers.start(env))
                await consumer_of(q, procs[-1], detail=workers.all_logs)
            tasks = [asyncio.create_task(p.run()) for p in producers]
            await poll(lambda: _all(len(p.confirmed) >= BEFORE for p in producers), 60,
                       "publishes before the kill")

            old = deployment.primary_port()
            deployment.node(old).proc.kill()  # SIGKILL, by PID
            killed_at = time.monotonic()
            await poll(lambda: asyncio.to_thread(lambda: deployment.primary_port() != old),
                       60, "a replica promoted", deployment.logs)
            promoted_at = time.monotonic()

            async def consumed_again() -> bool:
                done = {text(k) for k in await ledger.hkeys(f"{prefix}:fault:done")}
                return all(done & p.after(killed_at) for p in producers)

            await poll(consumed_again, 60, "workers consuming after the failover",
                       workers.all_logs)
            consuming_at = time.monotonic()
            marks = [len(p.confirmed) for p in producers]
            await poll(lambda: _all(len(p.confirmed) >= m + AFTER
                                    for p, m in zip(producers, marks, strict=True)),
                       60, "publishes after the failover")
            for p in producers:
                p.stop = True
            await asyncio.gather(*tasks)

            async def drained() -> bool:
                return all([await is_settled(q) for q in (replicated, memory)])

            await poll(drained, 90, "both queues drained", workers.all_logs)
            done = {text(k): int(v) for k, v in
                    (await ledger.hgetall(f"{prefix}:fault:done")).items()}
            alive = all(proc.poll() is None for proc in procs)
            reconnected = all("retrying in" in workers.logs[proc.pid].read_text()
                              for proc in procs)
            return {
                "promoted_s": promoted_at - killed_at,
                "publish_gap_replicated_s": producers[0].longest_gap(),
                "publish_gap_memory_s": producers[1].longest_gap(),
                "consuming_again_s": consuming_at - killed_at,
                "confirmed_replicated": len(producers[0].confirmed),
                "confirmed_memory": len(producers[1].confirmed),
                "lost_replicated": len(set(producers[0].confirmed) - set(done)),
                "lost_memory": len(set(producers[1].confirmed) - set(done)),
                "processed_twice": sum(1 for count in done.values() if count > 1),
                "publish_retries": [p.failures for p in producers],
                "workers_alive_and_reconnected": alive and reconnected,
            }
        finally:
            for p in producers:
                p.stop = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            workers.kill_all()
            await app.close()
            await ledger.aclose()
            deployment.stop()


async def _all(values: Iterable[bool]) -> bool:
    return all(values)
