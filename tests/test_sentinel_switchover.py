"""Planned switchover without loss, and the start-up check of ``min-replicas-to-write``.

A real deployment (sentinels.py): a primary, two replicas, three sentinels. Producers in
this process publish continuously to a ``replicated`` and a ``memory`` queue, retrying
each message with its idempotency key, while ``switchover()`` moves the primary; every
confirmed publish must be on the new primary afterwards (a bare ``SENTINEL FAILOVER``
loses 1 to 5 s of them: tests/test_sentinel.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import new_prefix, tidings
from failover_run import Producer
from fault_helpers import poll
from sentinels import start_deployment
from tidings import Tidings
from tidings.engine.switchover import switchover

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers


async def test_a_switchover_under_load_loses_no_confirmed_publish(
        tmp_path: Path, report: Callable[[str], None]) -> None:
    deployment = start_deployment(tmp_path, min_replicas=1)
    app = Tidings(deployment.url, key_prefix=new_prefix())
    replicated = app.queue("ha-replicated", durability="replicated", durability_timeout=1.0)
    memory = app.queue("ha-memory")
    producers = [Producer(replicated), Producer(memory)]
    tasks: list[asyncio.Task[None]] = []
    try:
        await app.connect()
        tasks = [asyncio.create_task(p.run()) for p in producers]
        await poll(lambda: _each(producers, 200), 60, "publishes before the switch")
        old = deployment.primary_port()
        result = await switchover(deployment.url)
        assert result.old[1] == old and result.new[1] == deployment.primary_port() != old
        marks = [len(p.confirmed) for p in producers]
        await poll(lambda: _each(producers, 200, marks), 60, "publishes after the switch",
                   lambda: f"; producers: {[t.done() and t.exception() for t in tasks]}, "
                           f"confirmed {[len(p.confirmed) for p in producers]}")
        for p in producers:
            p.stop = True
        await asyncio.gather(*tasks)
        for q, p in zip((replicated, memory), producers, strict=True):
            depth = (await q.stats()).depth  # read on the new primary
            assert depth == len(set(p.confirmed)), (q.name, depth, len(set(p.confirmed)))
        report(f"switchover under load: writes paused {result.writes_paused_s:.2f}s; "
               f"confirmed {len(producers[0].confirmed)} replicated + "
               f"{len(producers[1].confirmed)} memory, 0 lost; publish retries "
               f"{[p.failures for p in producers]}; publishing gap "
               f"{producers[0].longest_gap():.2f}s / {producers[1].longest_gap():.2f}s")
    finally:
        for p in producers:
            p.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.close()
        deployment.stop()


async def _each(producers: list[Producer], more: int, marks: list[int] | None = None) -> bool:
    marks = marks or [0] * len(producers)
    return all(len(p.confirmed) >= m + more for p, m in zip(producers, marks, strict=True))


def test_replicated_queues_warn_when_the_primary_lacks_min_replicas_to_write(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("without", "with"):
        (tmp_path / name).mkdir()
    without = start_deployment(tmp_path / "without", replicas=1)
    with_it = start_deployment(tmp_path / "with", replicas=1, min_replicas=1)
    try:
        for deployment, warned in ((without, True), (with_it, False)):
            for durability, expected in (("replicated", warned), ("memory", False)):
                caplog.clear()
                env = {"TIDINGS_REDIS_URL": deployment.url, "TIDINGS_KEY_PREFIX": new_prefix()}
                with caplog.at_level(logging.WARNING, logger="tidings.engine"):
                    asyncio.run(_connect(env, durability))
                found = any("min-replicas-to-write 0" in r.getMessage() for r in caplog.records)
                assert found is expected, (deployment.min_replicas, durability, caplog.text)
    finally:
        without.stop()
        with_it.stop()


async def _connect(env: dict[str, str], durability: str) -> None:
    app = Tidings(env["TIDINGS_REDIS_URL"], key_prefix=env["TIDINGS_KEY_PREFIX"])
    app.queue("q", durability=durability)
    try:
        await app.connect()
    finally:
        await app.close()


def test_cli_switchover_moves_the_primary(tmp_path: Path) -> None:
    deployment = start_deployment(tmp_path, replicas=1, min_replicas=1)
    try:
        env = {"TIDINGS_REDIS_URL": deployment.url, "TIDINGS_KEY_PREFIX": new_prefix()}
        old = deployment.primary_port()
        out = tidings(env, "ha", "switchover").stdout
        assert f":{old} ->" in out and deployment.primary_port() != old
        plain = {"TIDINGS_REDIS_URL": f"redis://127.0.0.1:{old}/0", "TIDINGS_KEY_PREFIX": "x"}
        refused = tidings(plain, "ha", "switchover", code=2)
        assert "redis+sentinel://" in refused.output and "Traceback" not in refused.output
    finally:
        deployment.stop()


