"""``python -m bench.ledger``: what the PostgreSQL ledger and outbox cost, against the raw
cost of the same database work.

* ``drain``: one worker drains N messages (no-op handler) with the ledger off, ``direct``
  (the worker writes to PostgreSQL), ``ship`` (the redis transport: the worker only ships
  batches to Redis; nobody ingests, so this is the worker's own cost) and ``redis`` (the
  same with ``tidings ingest`` running as its own process on the same 2 cores), rounds
  rotated; the target is on at least 0.8x of off. ``caught_up_s`` is how long after the
  last ack the ledger had written everything (it writes off the hot path).
* ``ingest``: the writer's own rate in events/s (COPY of the events plus the upsert of
  each message's state, one transaction per batch of 2,000), beside a raw COPY of the same
  event rows alone and a raw multi-row INSERT (executemany) of them.
* ``trace``: ``app.ledger.trace`` by message id and by correlation id, p50 / p99, with
  ``--trace-events`` events in the table (generated server-side).
* ``backup``: ``tidings backup`` and ``tidings restore`` of N queued messages (Redis
  side; default 1,000,000), seconds each, and the depth after the restore.
* ``outbox``: the relay's rows/s moving a backlog, and commit-to-handler latency p50/p99
  of single-row transactions with the relay woken by NOTIFY (an upper bound of
  commit-to-enqueue: it includes the worker's fetch).

Results are printed as JSON and written to ``bench/results/ledger.json``. Each run works
in a fresh schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tidings import Message, Outgoing, Tidings
from tidings.core.events import Event, EventKind
from tidings.core.ids import new_message_id
from tidings.ledger import db
from tidings.ledger.outbox import Outbox
from tidings.ledger.records import EVENT_COLUMNS, event_rows, make_record

from .drain import count_to
from .job import payload, priority
from .stats import RESULTS, latency_summary, median, ratio, rounded, write_result

CONCURRENCY = 256
VARIANTS = ("off", "direct", "ship", "redis")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def new_app(redis_url: str, pg_url: str, schema: str, ledger: bool,
            transport: str = "direct") -> Tidings:
    app = Tidings(redis_url, key_prefix=f"tbench-ledger-{uuid.uuid4().hex[:10]}", ledger={
        "database_url": pg_url, "db_schema": schema, "retention_in_workers": False,
        "ledger_transport": transport})
    if ledger:
        app.ledger.install(relay=False)
    return app


def ingester(app: Tidings, pg_url: str, schema: str) -> subprocess.Popen[bytes]:
    """``tidings ingest`` for ``app``'s key prefix, as its own process."""
    env = {**os.environ, "TIDINGS_REDIS_URL": str(app.settings.redis_url),
           "TIDINGS_KEY_PREFIX": app.settings.key_prefix, "TIDINGS_DATABASE_URL": pg_url,
           "TIDINGS_DB_SCHEMA": schema}
    return subprocess.Popen([str(Path(sys.executable).parent / "tidings"), "ingest"], env=env)


async def drop_keys(app: Tidings) -> None:
    keys = [k async for k in app.broker.client.scan_iter(
        match=f"{app.settings.key_prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await app.broker.client.unlink(*keys[i:i + 500])


async def drain(redis_url: str, pg_url: str, schema: str, n: int, variant: str
                ) -> tuple[float, float]:
    """(msg/s of the drain, seconds after the last ack until the ledger had it all)."""
    ledger = variant != "off"
    app = new_app(redis_url, pg_url, schema, ledger,
                  "redis" if variant in ("redis", "ship") else "direct")
    proc = ingester(app, pg_url, schema) if variant == "redis" else None
    queue = app.queue("drain")
    done = count_to(queue, n, CONCURRENCY)

    async with app:
        try:
            await queue.publish_many(Outgoing(payload(i), priority=priority(i))
                                     for i in range(n))
            if ledger:
                await app.ledger.flush()  # the publishes' events are not the drain's
            worker = app.worker(concurrency=CONCURRENCY)
            started = time.perf_counter()
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(done.wait(), 600)
            elapsed = time.perf_counter() - started
            worker.stop()
            await task
            caught = time.perf_counter()
            if ledger:
                await app.ledger.flush()
            if proc is not None:
                # another process's progress: nothing to await but the stream itself
                while await app.broker.client.xlen(app.key_space.ledger_spill):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            return n / elapsed, time.perf_counter() - caught
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            await drop_keys(app)


def synthetic(n_messages: int) -> list[tuple[Any, ...]]:
    """Records of n messages x (published, delivered, acked), as the writer makes them."""
    records = []
    now = time.time()
    for i in range(n_messages):
        msg_id = new_message_id()
        message = Message(msg_id, "ingest", payload(i), {"correlation_id": f"c{i}"})
        for kind in (EventKind.PUBLISHED, EventKind.DELIVERED, EventKind.ACKED):
            event = Event(kind, "ingest", msg_id, "normal", 0, f"c{i}", 0.001, None, None,
                          None, now, message)
            records.append(make_record(event, message, "bench", "hash", None))
    return records


async def ingest(pg_url: str, schema: str, events: int) -> dict[str, Any]:
    from tidings.core.ledger_settings import LedgerSettings
    from tidings.ledger.writer import LedgerWriter

    records = synthetic(events // 3)
    settings = LedgerSettings(database_url=pg_url, db_schema=schema)
    host = Tidings("redis://127.0.0.1:1/0", ledger={"db_schema": schema})

    async def url() -> str:
        return pg_url

    writer = LedgerWriter(host, url, settings)
    batch = settings.ledger_batch
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        await writer.write(records[i:i + batch])
    writer_rate = len(records) / (time.perf_counter() - started)
    await writer.close()
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
    try:
        rows = event_rows(synthetic(events // 3))
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            await conn.copy_records_to_table("events", records=rows[i:i + batch],
                                             columns=EVENT_COLUMNS, schema_name=schema)
        copy_rate = len(rows) / (time.perf_counter() - started)
        rows = event_rows(synthetic(events // 3))
        insert = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
                  f"({', '.join(f'${i + 1}' for i in range(len(EVENT_COLUMNS)))})")
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            await conn.executemany(insert, rows[i:i + batch])
        insert_rate = len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()
    return {"events": len(records), "batch": batch,
            "writer_events_per_s": rounded(writer_rate, 0),
            "raw_copy_events_only_per_s": rounded(copy_rate, 0),
            "raw_executemany_events_only_per_s": rounded(insert_rate, 0),
            "writer_vs_raw_copy": rounded(ratio(writer_rate, copy_rate)),
            "target_events_per_s": 20_000}


async def trace_latency(pg_url: str, schema: str, events: int, app: Tidings
                        ) -> dict[str, Any]:
    """Fill the tables server-side (messages of 4 events over 30 days), then time traces."""
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
    try:
        messages = events // 4
        started = time.perf_counter()
        ids = await conn.fetch(
            "SELECT DISTINCT day FROM (SELECT (now() - (g % 30) * interval '1 day')::date AS day "
            "FROM generate_series(0, 29) g) d")
        from tidings.ledger.queries import create_partition

        for row in ids:
            for table in ("messages", "events"):
                await conn.execute(create_partition(table, row[0]))
        await conn.execute("""
            INSERT INTO messages (day, message_id, queue, state, attempts, correlation_id,
                updated_at)
            SELECT (now() - (g % 30) * interval '1 day')::date, lpad(g::text, 26, '0'), 'trace',
                'acked',
                0, 'corr' || (g / 10), now()
            FROM generate_series(1, $1) g""", messages)
        await conn.execute("""
            INSERT INTO events (day, message_id, event_id, kind, queue, at, attempt)
            SELECT (now() - (g % 30) * interval '1 day')::date, lpad(g::text, 26, '0'), g * 4 + k,
                (ARRAY['published', 'delivered', 'retried', 'acked'])[k + 1], 'trace', now(), k
            FROM generate_series(1, $1) g, generate_series(0, 3) k""", messages)
        await conn.execute("ANALYZE messages; ANALYZE events")
        fill_s = time.perf_counter() - started
    finally:
        await conn.close()
    queue = app.queue("trace")
    async with app:
        for i in range(200):  # real messages among the generated ones
            await queue.publish({"n": i}, correlation_id=f"sample{i // 10}")
        await app.ledger.flush()
        found = await app.ledger.trace(correlation_id="sample0")
        ids_known = [t.message_id for t in found]
        by_id, by_corr = [], []
        for _ in range(200):
            started = time.perf_counter()
            await app.ledger.trace(random.choice(ids_known))
            by_id.append(time.perf_counter() - started)
            started = time.perf_counter()
            await app.ledger.trace(correlation_id=f"corr{random.randrange(messages // 10)}")
            by_corr.append(time.perf_counter() - started)
        await drop_keys(app)
    return {"events_in_table": events + 600, "fill_s": round(fill_s, 1),
            "by_message_id": {k: round(v, 2) for k, v in latency_summary(by_id).items()},
            "by_correlation_id": {k: round(v, 2) for k, v in latency_summary(by_corr).items()}}


async def outbox(redis_url: str, pg_url: str, schema: str, rows: int) -> dict[str, Any]:
    app = new_app(redis_url, pg_url, schema, ledger=False)
    app.queue("outbox")
    box = Outbox(schema)
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            for i in range(rows):
                await box.publish(conn, "outbox", payload(i))
        async with app:
            relay = app.ledger.relay_in_workers()
            started = time.perf_counter()
            while await relay.relay_once():
                pass
            relay_rate = rows / (time.perf_counter() - started)
            await drop_keys(app)
        latency = await _commit_to_handler(redis_url, pg_url, schema, conn, box)
    finally:
        await conn.close()
    return {"rows": rows, "relay_rows_per_s": rounded(relay_rate, 0),
            "commit_to_handler": {k: round(v, 2) for k, v in latency.items()}}


async def _commit_to_handler(redis_url: str, pg_url: str, schema: str,
                             conn: asyncpg.Connection, box: Outbox, n: int = 300
                             ) -> dict[str, float]:
    app = new_app(redis_url, pg_url, schema, ledger=False)
    queue = app.queue("latency")
    samples: list[float] = []
    got = asyncio.Event()

    @queue.handler
    async def handle(msg: Message) -> None:
        samples.append(time.time() - msg.payload["committed"])
        got.set()

    app.ledger.relay_in_workers()
    async with app:
        async with app.worker():
            await _samples(conn, box, schema, got, n)
        await drop_keys(app)
    return latency_summary(samples)


async def _samples(conn: asyncpg.Connection, box: Outbox, schema: str, got: asyncio.Event,
                   n: int) -> None:
    await asyncio.sleep(0.5)  # the relay's LISTEN is in place
    for _ in range(n):
        got.clear()
        async with conn.transaction():
            await box.publish(conn, "latency", {"committed": 0})
            await conn.execute(f'UPDATE "{schema}".outbox SET payload = jsonb_build_object('
                               "'committed', extract(epoch from clock_timestamp())) "
                               "WHERE id = currval(pg_get_serial_sequence("
                               f"'\"{schema}\".outbox', 'id'))")
        await asyncio.wait_for(got.wait(), 30)


async def backup_restore(redis_url: str, n: int) -> dict[str, Any]:
    """Back up N queued messages, delete them, restore: seconds of each, and the check."""
    from tidings.ledger.backup import backup, restore

    app = Tidings(redis_url, key_prefix=f"tbench-backup-{uuid.uuid4().hex[:10]}")
    queue = app.queue("backup")
    folder = Path(tempfile.mkdtemp(prefix="tidings-bench-backup-"))
    async with app:
        try:
            for start in range(0, n, 100_000):
                await queue.publish_many(
                    (Outgoing(payload(i), priority=priority(i))
                     for i in range(start, min(n, start + 100_000))), chunk_size=5000)
            made = await backup(app, None, folder)
            await drop_keys(app)
            back = await restore(app, None, folder)
            depth = (await queue.stats()).depth
        finally:
            await drop_keys(app)
            shutil.rmtree(folder, ignore_errors=True)
    return {"messages": n, "backup_s": made.seconds, "restore_s": back.seconds,
            "backup_mb": round(made.redis_bytes / 1e6, 1), "queued_after_restore": depth}


async def drains(args: argparse.Namespace, schema: str) -> dict[str, Any]:
    """The drain off, on (direct: the worker writes) and redis (the worker ships, an
    ingester process writes), rounds rotated."""
    rounds: list[dict[str, float]] = []
    caught: dict[str, list[float]] = {v: [] for v in VARIANTS[1:]}
    for r in range(args.rounds):
        figures: dict[str, float] = {}
        shift = r % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            rate, lag = await drain(args.redis_url, args.database_url, schema, args.messages,
                                    variant)
            figures[variant] = rate
            if variant != "off":
                caught[variant].append(lag)
            log(f"round {r + 1}/{args.rounds} ledger {variant}: {rate:,.0f} msg/s")
        rounds.append(figures)
    medians = {v: median([f[v] for f in rounds]) for v in VARIANTS}
    return {
        "messages": args.messages, "rounds": args.rounds,
        "msg_per_s": {v: rounded(m, 0) for v, m in medians.items()},
        "ratio_to_off": {v: rounded(ratio(medians[v], medians["off"])) for v in VARIANTS[1:]},
        "ratio_per_round_median": {v: rounded(median([f[v] / f["off"] for f in rounds]))
                                   for v in VARIANTS[1:]},
        "caught_up_s_median": {v: rounded(median(c), 2) for v, c in caught.items()},
        "target": 0.8}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(args.database_url)
    await db.migrate(conn, schema)
    try:
        result: dict[str, Any] = {"drain": await drains(args, schema)}
        log("ingest ...")
        result["ingest"] = await ingest(args.database_url, schema, args.ingest_events)
        log("outbox ...")
        result["outbox"] = await outbox(args.redis_url, args.database_url, schema,
                                        args.outbox_rows)
        log(f"backup and restore of {args.backup_messages:,} queued messages ...")
        result["backup"] = await backup_restore(args.redis_url, args.backup_messages)
        log(f"trace with {args.trace_events:,} events ...")
        result["trace"] = await trace_latency(
            args.database_url, schema, args.trace_events,
            new_app(args.redis_url, args.database_url, schema, ledger=True))
        return result
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get(
        "TIDINGS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--database-url", default=os.environ.get(
        "TIDINGS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ingest-events", type=int, default=300_000)
    parser.add_argument("--outbox-rows", type=int, default=10_000)
    parser.add_argument("--trace-events", type=int, default=10_000_000)
    parser.add_argument("--backup-messages", type=int, default=1_000_000)
    parser.add_argument("--only-backup", action="store_true", help="only the backup drill")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 messages, 2 rounds, 30,000 events, 100,000 in trace")
    parser.add_argument("--output", default=str(RESULTS / "ledger.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds, args.ingest_events = 2_000, 2, 30_000
        args.outbox_rows, args.trace_events, args.backup_messages = 1_000, 100_000, 20_000
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    started = time.time()
    if args.only_backup:
        result = {"backup": asyncio.run(backup_restore(args.redis_url, args.backup_messages))}
    else:
        result = asyncio.run(run(args))
    write_result(result, started, args.output)


if __name__ == "__main__":
    main()
