"""Retention (partition drops, per-queue and payload retention), the S3 archive against a
real S3-compatible server (moto), and GDPR erasure: nothing of the subject is left."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import pytest
from aiobotocore.session import get_session

from fault_helpers import poll
from tidings import DeadLetter, Message, Tidings
from tidings.core import ids
from tidings.core.clock import ManualClock
from tidings.ledger.erasure import ErasureReport, _erase_spill
from tidings.ledger.outbox import Outbox
from tidings.ledger.retention import partition_days

DAY = 86_400.0


@pytest.fixture(autouse=True)
def future_ids() -> Iterator[None]:
    """These tests move the clock years ahead, and message ids never go back in time
    within a process (core/ids.py): give the later tests their present back."""
    saved = list(ids._last_id)
    yield
    ids._last_id[:] = saved


async def _all_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    async with get_session().create_client("s3", endpoint_url=endpoint,
                                           region_name="us-east-1") as s3:
        listing = await s3.list_objects_v2(Bucket=bucket)
        found = {}
        for item in listing.get("Contents", []):
            reply = await s3.get_object(Bucket=bucket, Key=item["Key"])
            async with reply["Body"] as body:
                found[item["Key"]] = await body.read()
        return found


async def test_retention_archives_then_drops_old_days_and_restore_loads_them_back(
        make_app: Callable[..., Tidings], pg_url: str, new_schema: Callable[[], str],
        s3_endpoint: str, bucket: str) -> None:
    schema = new_schema()
    # Message ids carry the day their partition is chosen by, and never go back in time
    # within a process: the clock starts past every other test's (see future_ids).
    clock = ManualClock(2_000_000_000.0)
    app = make_app(clock=clock, ledger={
        "database_url": pg_url, "db_schema": schema, "retention_days": 30,
        "queue_retention_days": {"ret-short": 7}, "payload_retention_days": 3,
        "ledger_payloads": "full", "archive_url": f"s3://{bucket}/ledger",
        "s3_endpoint_url": s3_endpoint, "retention_in_workers": False})
    app.ledger.install(relay=False)
    long_q, short_q = app.queue("ret-long"), app.queue("ret-short")
    async with app:
        old = [await long_q.publish({"n": i}) for i in range(3)]  # day 0
        await short_q.publish({"n": "short"})
        await app.ledger.flush()
        clock.advance(10 * DAY)
        recent = await long_q.publish({"n": "recent"})  # day 10
        await app.ledger.flush()
        clock.advance(25 * DAY)  # day 35: day 0 is past 30 days, day 10 past 7 and 3
        report = await app.ledger.run_retention()
        conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
        try:
            days = await partition_days(conn, "messages")
            day0 = (clock_day(clock) - timedelta(35))
            assert day0.isoformat() in report.dropped_days and day0 not in days
            assert await conn.fetchval("SELECT count(*) FROM messages WHERE message_id = "
                                       "ANY($1)", old) == 0
            row = await conn.fetchrow("SELECT payload, payload_hash FROM messages WHERE "
                                      "message_id = $1", recent)
            assert row["payload"] is None and row["payload_hash"] is not None
            objects = await _all_objects(s3_endpoint, bucket)
            key = f"ledger/{day0.isoformat()}/ret-long.jsonl.gz"
            lines = [orjson.loads(x) for x in gzip.decompress(objects[key]).splitlines()]
            assert sorted(x["message"]["message_id"] for x in lines) == sorted(old)
            assert all([e["kind"] for e in x["events"]] == ["published"] for x in lines)
            manifest = orjson.loads(objects[f"ledger/{day0.isoformat()}/manifest.json"])
            assert manifest["objects"]["ret-long"]["rows"] == 3
            restored = await app.ledger.restore(day0, "ret-long")
            assert restored == 3
            (trace,) = await app.ledger.trace(old[0])
            assert trace.payload == {"n": 0} and [e.kind for e in trace.events] == ["published"]
        finally:
            await conn.close()


def clock_day(clock: ManualClock) -> date:
    return datetime.fromtimestamp(clock.time(), UTC).date()


async def test_erasure_leaves_nothing_of_the_subject_anywhere(
        make_app: Callable[..., Tidings], pg_url: str, new_schema: Callable[[], str],
        s3_endpoint: str, bucket: str) -> None:
    schema = new_schema()
    clock = ManualClock(2_000_000_000.0)  # see the test above
    app = make_app(clock=clock, ledger={
        "database_url": pg_url, "db_schema": schema, "ledger_payloads": "full",
        "subject_path": "payload.user", "archive_url": f"s3://{bucket}/a",
        "s3_endpoint_url": s3_endpoint, "retention_in_workers": False})
    app.ledger.install(relay=False)
    q = app.queue("erase-q")
    async with app:
        archived = await q.publish({"user": "ann", "text": "old reset"})
        await q.publish({"user": "bob", "text": "old"})
        await app.ledger.flush()
        clock.advance(40 * DAY)
        gone = await app.ledger.run_retention()  # day 0 goes to the archive
        assert gone.dropped_days, gone
        queued = await q.publish({"user": "ann", "text": "reset link"},
                                 idempotency_key="reset-ann-1")
        await q.publish({"user": "ann", "text": "later"}, delay=3600)
        await q.publish({"user": "bob", "text": "hello"})
        await app.ledger.flush()
        pool = await app.ledger.pool()
        async with pool.acquire() as conn:
            await Outbox(schema).publish(conn, "erase-q", {"user": "ann", "text": "outbox"})
        # a dead letter of ann's, straight from the worker's path
        dead_q = app.queue("erase-dead", max_attempts=1)

        @dead_q.handler
        async def handle(msg: Message) -> None:
            raise DeadLetter("bounced")

        await dead_q.publish({"user": "ann", "text": "bounced mail"})
        async with app.worker(["erase-dead"]):
            await poll(lambda: _at_least(dead_q.dlq.count, 1), 20, "the dead letter")
        shipper = make_app(clock=clock, ledger={  # a producer whose events wait in Redis
            "database_url": pg_url, "db_schema": schema, "ledger_transport": "redis",
            "subject_path": "payload.user", "retention_in_workers": False})
        shipper.ledger.install(relay=False)
        async with shipper:
            await shipper.queue("erase-q").publish({"user": "ann", "text": "shipped"})
            await shipper.queue("erase-q").publish({"user": "bob", "text": "shipped"})
            await shipper.ledger.flush()
        # the part of the erasure that reaches events still waiting in the stream (the
        # full erasure below first flushes, and a direct writer then drains the stream)
        probe = ErasureReport("")
        await _erase_spill(app, "ann", probe)
        assert probe.spilled_events == 1
        (entry,) = await app.broker.client.xrange(app.key_space.ledger_spill)
        assert b"bob" in entry[1][b"r"] and b"ann" not in entry[1][b"r"]
        report = await app.ledger.erase("ann")
        # queued: the archived one (no worker took it), the new one, the shipped one
        assert (report.queued, report.delayed, report.dead_lettered) == (3, 1, 1)
        assert report.ledger_messages == 3 and report.outbox_rows == 1
        assert report.idempotency_keys == 1
        assert report.archived_messages == 1
        assert await app.ledger.trace(subject="ann") == []
        assert await app.ledger.trace(queued) == []
        # nothing of ann anywhere: Redis, tables, archive; bob untouched
        client = app.broker.client
        redis_text = b""
        async for key in client.scan_iter(match=f"{app.settings.key_prefix}:*"):
            redis_text += key
            kind = await client.type(key)
            if kind == b"stream":
                redis_text += repr(await client.xrange(key)).encode()
            elif kind == b"hash":
                redis_text += repr(await client.hgetall(key)).encode()
            elif kind == b"zset":
                redis_text += repr(await client.zrange(key, 0, -1)).encode()
        assert b"ann" not in redis_text and b"bob" in redis_text
        async with pool.acquire() as conn:
            for table in ("messages", "events", "outbox"):
                dump = await conn.fetchval(f"SELECT coalesce(string_agg(t::text, ''), '') "
                                           f"FROM {table} t")
                assert "ann" not in dump, table
            audit = await conn.fetchval("SELECT string_agg(t::text, '') FROM audit t")
            assert "ann" not in audit and report.subject_sha256 in audit
        objects = await _all_objects(s3_endpoint, bucket)
        text = b"".join(gzip.decompress(v) if k.endswith(".gz") else v
                        for k, v in objects.items())
        assert b"ann" not in text and b"bob" in text
        assert archived not in text.decode()


async def _at_least(read: Callable[[], Awaitable[int]], value: int) -> bool:
    return await read() >= value
