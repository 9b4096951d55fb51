"""PostgreSQL down: the worker keeps processing, events wait (memory, then a Redis
stream) and are written when the database is back; past the bounds, drops are counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import asyncpg
import pytest

from conftest import Recorder
from fault_helpers import poll
from pg_proxy import Proxy
from tidings import EventKind, Message, Tidings


@pytest.fixture
async def proxy(pg_url: str) -> Proxy:
    parts = urlsplit(pg_url)
    if parts.port is None:
        pytest.skip("the PostgreSQL of this run listens on a socket, not TCP")
    found = await Proxy(parts.port, parts.hostname or "127.0.0.1").start()
    yield found  # type: ignore[misc]
    await found.cut()


def proxied(pg_url: str, proxy: Proxy) -> str:
    parts = urlsplit(pg_url)
    return parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
                          ).geturl()


async def test_worker_goes_on_while_postgres_is_down_and_the_ledger_catches_up(
        make_app: Callable[..., Tidings], pg_url: str, schema: str, proxy: Proxy,
        pg: asyncpg.Connection) -> None:
    recorder = Recorder()
    app = make_app(middleware=[recorder], ledger={
        "database_url": proxied(pg_url, proxy), "db_schema": schema, "ledger_flush_ms": 20,
        "ledger_batch": 50, "retention_in_workers": False})
    writer = app.ledger.install(relay=False)
    writer.probe_every = 0.05
    q = app.queue("outage-q")

    @q.handler
    async def handle(msg: Message) -> None:
        return None

    async with app:
        first = await q.publish({"n": -1})
        await app.ledger.flush()
        assert await pg.fetchval("SELECT count(*) FROM messages WHERE message_id = $1", first)
        await proxy.cut()
        ids = [await q.publish({"n": n}) for n in range(200)]
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 200)  # processing never waited
        await app.ledger.flush()
        assert writer.down.is_set() and writer.spilled > 0 and writer.dropped == 0
        assert await app.broker.client.xlen(app.key_space.ledger_spill) > 0
        await proxy.restore()

        async def caught_up() -> bool:
            await writer.flush()
            return bool(await pg.fetchval(
                "SELECT count(*) FROM messages WHERE state = 'acked' AND message_id = ANY($1)",
                ids) == 200)

        await poll(caught_up, 30, "the ledger to catch up")
        assert not await app.broker.client.xlen(app.key_space.ledger_spill)
        events = await pg.fetchval("SELECT count(*) FROM events WHERE message_id = ANY($1)",
                                   ids)
        assert events == 600  # published, delivered, acked: each once, none lost or doubled
        assert writer.dropped == 0


async def test_past_both_bounds_drops_are_counted_and_logged(
        make_app: Callable[..., Tidings], pg_url: str, schema: str, proxy: Proxy,
        caplog: pytest.LogCaptureFixture) -> None:
    await proxy.cut()  # down from the start
    app = make_app(ledger={
        "database_url": proxied(pg_url, proxy), "db_schema": schema, "ledger_flush_ms": 20,
        "ledger_batch": 50, "ledger_buffer": 100, "ledger_spill": 0,
        "retention_in_workers": False})
    writer = app.ledger.install(relay=False)
    writer.probe_every = 0.0  # every flush tries PostgreSQL
    q = app.queue("outage-drop")
    caplog.set_level(logging.ERROR, "tidings.ledger")
    async with app:
        await q.publish_many(list(range(300)))
        await writer.flush()
        assert writer.dropped > 0 and writer.written == 0
        assert writer.buffered + writer.dropped == 300  # every event kept or counted
        assert "events dropped" in caplog.text
        metrics = {m.name: m.samples[0].value for m in writer.collect()}
        assert metrics["tidings_ledger_dropped_events"] == writer.dropped
        await proxy.restore()
        await writer.flush()
        assert writer.written == 300 - writer.dropped and writer.buffered == 0
