"""The transactional outbox against a real PostgreSQL: the caller's transaction decides,
the relay publishes every committed row exactly once, even when it is killed mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from fault_helpers import ROOT, TIDINGS_BIN, poll
from tidings import Tidings
from tidings.core.errors import ValidationError
from tidings.core.message import decode
from tidings.ledger.outbox import Outbox


async def queued_payloads(app: Tidings, name: str) -> list[Any]:
    """Every message waiting in ``name``'s lanes (no worker runs), decoded."""
    found = []
    for lane in app.queue(name).keys.lanes:
        for _, fields in await app.broker.client.xrange(lane):
            found.append(decode(fields[b"m"]).payload)
    return found


async def test_committed_rows_are_published_and_rolled_back_ones_never(
        make_ledger_app: Callable[..., Tidings], pg_url: str, schema: str,
        pg: asyncpg.Connection) -> None:
    app = make_ledger_app()
    app.queue("outbox-drivers")
    box = Outbox(schema)
    # asyncpg, committed and rolled back
    async with pg.transaction():
        await box.publish(pg, "outbox-drivers", {"by": "asyncpg"}, correlation_id="c1")
    with pytest.raises(RuntimeError):
        async with pg.transaction():
            await box.publish(pg, "outbox-drivers", {"by": "asyncpg-rolled-back"})
            raise RuntimeError("business change failed")
    # psycopg 3
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        await box.publish(conn, "outbox-drivers", {"by": "psycopg"}, priority="high")
        await conn.commit()
        await box.publish(conn, "outbox-drivers", {"by": "psycopg-rolled-back"})
        await conn.rollback()
    # SQLAlchemy async session
    engine = create_async_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://"))
    async with AsyncSession(engine) as session:
        async with session.begin():
            await box.publish(session, "outbox-drivers", {"by": "sqlalchemy"}, delay=0)
        await box.publish(session, "outbox-drivers", {"by": "sqlalchemy-rolled-back"})
        await session.rollback()
    await engine.dispose()

    async with app:
        relay = app.ledger.relay_in_workers()
        assert await relay.relay_once() == 3
        assert await relay.relay_once() == 0
        payloads = await queued_payloads(app, "outbox-drivers")
    assert sorted(p["by"] for p in payloads) == ["asyncpg", "psycopg", "sqlalchemy"]
    assert await pg.fetchval("SELECT count(*) FROM outbox WHERE queue = 'outbox-drivers' AND "
                             "sent_at IS NOT NULL AND message_id IS NOT NULL") == 3


async def test_outbox_refuses_bad_input_and_the_relay_marks_an_unknown_queue(
        make_ledger_app: Callable[..., Tidings], schema: str, pg: asyncpg.Connection) -> None:
    box = Outbox(schema)
    with pytest.raises(ValidationError, match="priority"):
        await box.publish(pg, "outbox-bad", {"x": 1}, priority="urgent")
    with pytest.raises(ValidationError, match="payload"):
        await box.publish(pg, "outbox-bad", {"x": {1, 2}})
    with pytest.raises(ValidationError, match="conn"):
        await box.publish(object(), "outbox-bad", {"x": 1})
    row = await box.publish(pg, "outbox-nowhere", {"x": 1})
    app = make_ledger_app()
    async with app:
        assert await app.ledger.relay_in_workers().relay_once() >= 1
    error = await pg.fetchval("SELECT error FROM outbox WHERE id = $1", row)
    assert error == "unknown queue 'outbox-nowhere'"


async def test_the_relay_in_a_worker_is_woken_by_notify(
        make_ledger_app: Callable[..., Tidings], schema: str, pg: asyncpg.Connection) -> None:
    app = make_ledger_app(outbox_poll=60)  # polling would be far too late: NOTIFY wakes it
    q = app.queue("outbox-notify")
    got: asyncio.Queue[Any] = asyncio.Queue()

    @q.handler
    async def handle(msg: Any) -> None:
        await got.put(msg.payload)

    app.ledger.install(relay=True)
    async with app, app.worker():
        relay = app.ledger.relay
        assert relay is not None
        await poll(lambda: _listening(pg), 10, "the relay's LISTEN")
        await Outbox(schema).publish(pg, "outbox-notify", {"n": 1})
        assert await asyncio.wait_for(got.get(), 10) == {"n": 1}


async def _listening(pg: asyncpg.Connection) -> bool:
    return bool(await pg.fetchval("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "application_name = 'tidings' AND query LIKE 'LISTEN%'"))


def relay_process(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(TIDINGS_BIN), "outbox", "relay", "--app",
                             "tests.apps.outbox_app:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
async def test_a_relay_killed_mid_batch_loses_nothing_and_publishes_nothing_twice(
        make_app: Callable[..., Tidings], pg_url: str, new_schema: Callable[[], str],
        redis_url: str) -> None:
    schema = await asyncio.to_thread(new_schema)  # its own outbox: counted whole
    app = make_app()
    env = {**os.environ, "TIDINGS_REDIS_URL": redis_url,
           "TIDINGS_KEY_PREFIX": app.settings.key_prefix, "TIDINGS_DATABASE_URL": pg_url,
           "TIDINGS_DB_SCHEMA": schema, "TIDINGS_OUTBOX_BATCH": "5000",
           "TIDINGS_OUTBOX_CHUNK": "10",
           "OUTBOX_QUEUE": "outbox-kill", "PYTHONPATH": str(ROOT)}
    conn = await asyncpg.connect(pg_url)
    box = Outbox(schema)
    committed: set[int] = set()
    for n in range(40):  # 40 transactions of 50 rows, every fourth rolled back
        try:
            async with conn.transaction():
                rows = [await box.publish(conn, "outbox-kill", {"row": n * 50 + i})
                        for i in range(50)]
                if n % 4 == 3:
                    raise RuntimeError("rolled back")
            committed.update(n * 50 + i for i in range(50))
        except RuntimeError:
            pass
        assert rows
    app.queue("outbox-kill")
    async with app:
        first = relay_process(env)
        try:
            # kill -9 once the relay has published part of its batch and marked none sent
            await poll(lambda: _some_queued(app), 60, "the first relay's publishes")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        sent_at_kill = await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox '
                                           "WHERE sent_at IS NOT NULL")
        queued_at_kill = len(await queued_payloads(app, "outbox-kill"))
        assert queued_at_kill > sent_at_kill  # published, not yet marked: mid-batch
        second = relay_process(env)
        try:
            await poll(lambda: _all_sent(conn, schema), 120, "every row sent")
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0, second.stderr.read() if second.stderr else ""
        payloads = await queued_payloads(app, "outbox-kill")
    await conn.close()
    counts = Counter(p["row"] for p in payloads)
    assert set(counts) == committed  # none from a rolled-back transaction, none lost
    assert set(counts.values()) == {1}  # none twice
    assert len(payloads) == len(committed) == 1500


async def _some_queued(app: Tidings) -> bool:
    return bool(sum([await app.broker.client.xlen(k)
                     for k in app.queue("outbox-kill").keys.lanes]))


async def _all_sent(conn: asyncpg.Connection, schema: str) -> bool:
    return not await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE '
                                   "sent_at IS NULL AND error IS NULL")


