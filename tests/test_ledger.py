"""The ledger against a real PostgreSQL: every event recorded, traced, batched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from conftest import Recorder
from tidings import DeadLetter, EventKind, Message, Tidings
from tidings.core.errors import ValidationError


async def test_every_lifecycle_event_is_recorded_and_traced(
        make_ledger_app: Callable[..., Tidings], pg: asyncpg.Connection) -> None:
    recorder = Recorder()
    app = make_ledger_app(middleware=[recorder], ledger_payloads="full",
                          subject_path="payload.user")
    app.ledger.install(relay=False)
    q = app.queue("ledger-email", max_attempts=3, backoff_base=0.01, backoff_cap=0.01,
                  jitter=0)

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload["n"] == 1:
            raise DeadLetter("bad address")
        if msg.attempts == 0 and msg.payload["n"] == 2:
            raise RuntimeError("smtp timeout")

    async with app:
        ids = [await q.publish({"n": n, "user": f"u{n}"}, correlation_id=f"c{n}")
               for n in range(3)]
        worker = app.worker()
        async with worker:
            await recorder.wait_count(EventKind.ACKED, 2)
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
        await app.ledger.flush()
        states = dict(await pg.fetch("SELECT message_id, state FROM messages WHERE "
                                     "queue = 'ledger-email'"))
        assert states == {ids[0]: "acked", ids[1]: "dead_lettered", ids[2]: "acked"}
        count = await pg.fetchval("SELECT count(*) FROM events WHERE queue = 'ledger-email'")
        assert count == len([e for e in recorder.events if e.queue == "ledger-email"
                             and e.kind in (EventKind.PUBLISHED, EventKind.DELIVERED,
                                            EventKind.ACKED, EventKind.RETRIED,
                                            EventKind.DEAD_LETTERED)])
        (retried,) = await app.ledger.trace(ids[2])
        assert [e.kind for e in retried.events] == ["published", "delivered", "retried",
                                                    "delivered", "acked"]
        assert retried.events[2].error is not None and "smtp timeout" in retried.events[2].error
        assert retried.payload == {"n": 2, "user": "u2"}
        assert retried.publisher is not None and retried.events[1].actor == worker.consumer
        (dead,) = await app.ledger.trace(correlation_id="c1")
        assert dead.state == "dead_lettered" and dead.reason == "bad address"
        (by_subject,) = await app.ledger.trace(subject="u0")
        assert by_subject.message_id == ids[0]


async def test_trace_refuses_what_is_not_a_message_id(
        make_ledger_app: Callable[..., Tidings]) -> None:
    app = make_ledger_app()
    with pytest.raises(ValidationError, match="message_id"):
        await app.ledger.trace("not-an-id")
    with pytest.raises(ValidationError, match="exactly one"):
        await app.ledger.trace()


async def test_payload_modes(make_ledger_app: Callable[..., Tidings],
                             pg: asyncpg.Connection) -> None:
    found: dict[str, Any] = {}
    for mode in ("none", "hash", "full"):
        app = make_ledger_app(ledger_payloads=mode)
        app.ledger.install(relay=False)
        q = app.queue(f"ledger-modes-{mode}")
        async with app:
            msg_id = await q.publish({"secret": mode})
            await app.ledger.flush()
            found[mode] = tuple(await pg.fetchrow(
                "SELECT payload, payload_hash FROM messages WHERE message_id = $1", msg_id))
    assert found["none"] == (None, None)
    assert found["hash"][0] is None and len(found["hash"][1]) == 64
    assert found["full"][0] == '{"secret": "full"}' and len(found["full"][1]) == 64


async def test_embedded_postgres_serves_the_ledger(
        make_app: Callable[..., Tidings], embedded_pg: str) -> None:
    app = make_app(ledger={"database_url": embedded_pg, "db_schema": "tidings_embedded"})
    app.ledger.install(relay=False)
    await app.ledger.migrate()
    q = app.queue("ledger-embedded")
    async with app:
        msg_id = await q.publish({"x": 1})
        await app.ledger.flush()
        (found,) = await app.ledger.trace(msg_id)
    assert found.state == "published" and [e.kind for e in found.events] == ["published"]


async def test_redis_transport_ships_and_ingest_writes(
        make_ledger_app: Callable[..., Tidings], pg: asyncpg.Connection) -> None:
    import asyncio

    from fault_helpers import poll

    app = make_ledger_app(ledger_transport="redis")
    app.ledger.install(relay=False)
    q = app.queue("ledger-shipped")
    async with app:
        ids = [await q.publish({"n": n}) for n in range(5)]
        await app.ledger.flush()
        assert await app.broker.client.xlen(app.key_space.ledger_spill) >= 1
        assert not await pg.fetchval("SELECT count(*) FROM messages WHERE message_id = ANY($1)",
                                     ids)  # the worker wrote nothing itself
        stop = asyncio.Event()
        task = asyncio.create_task(app.ledger.ingest(stop))

        async def written() -> bool:
            return bool(await pg.fetchval(
                "SELECT count(*) FROM messages WHERE message_id = ANY($1)", ids) == 5)

        await poll(written, 20, "the ingester")
        stop.set()
        await task
        assert not await app.broker.client.xlen(app.key_space.ledger_spill)


async def test_demo_with_the_ledger_shows_a_trace(redis_url: str, pg_url: str, schema: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from tidings.demo import run_demo

    monkeypatch.setenv("TIDINGS_REDIS_URL", redis_url)
    monkeypatch.setenv("TIDINGS_DATABASE_URL", pg_url)
    monkeypatch.setenv("TIDINGS_DB_SCHEMA", schema)
    out = io.StringIO()
    summary = await run_demo(200, Console(file=out, width=150), ledger=True)
    assert summary["complete"] is True
    traced = summary["ledger_trace"]
    assert traced["events"][0] == "published" and "retried" in traced["events"]
    assert f"tidings trace {traced['message_id']}" in out.getvalue()
