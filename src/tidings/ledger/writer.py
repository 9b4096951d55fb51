"""The ledger writer: a middleware that records every lifecycle event in PostgreSQL.

``on_event`` only appends (event, message) to a bounded in-memory buffer: the worker never
waits for the database. A flusher task writes the buffer every ``ledger_flush_ms`` or as
soon as ``ledger_batch`` events wait: the events by COPY, the messages' current state by
one multi-row upsert, in one transaction.

When PostgreSQL is down (or slow past the write timeout) a batch goes to a Redis stream
(``KeySpace.ledger_spill``, one entry per batch) and is written from there, by any
process's writer, once the database answers again. Only when the stream holds
``ledger_spill`` events and the buffer ``ledger_buffer`` are events dropped; each drop is
counted (``dropped``) and logged with the running total. By design that is zero.
"""

from __future__ import annotations

import asyncio
import contextvars
import getpass
import itertools
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import msgpack
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..core.events import Event, EventKind
from ..core.message import Message
from ..core.middleware import Call, Middleware, WorkerView
from . import queries
from .records import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    RECORDED,
    Record,
    columns,
    event_rows,
    full_record,
    lean_record,
    message_rows,
)

if TYPE_CHECKING:
    from ..core.ledger_settings import LedgerSettings
    from ..queues.host import ExtensionHost

log = logging.getLogger("tidings.ledger")
_publishing: contextvars.ContextVar[dict[str, Message] | None] = contextvars.ContextVar(
    "tidings_ledger_publishing", default=None)
# Connection-level failures: the database is away, the batch waits (memory, then Redis).
DOWN = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError)
_GROUP = "ledger"


def process_actor() -> str:
    """Who publishes from this process: OS user @ host : pid."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


class LedgerWriter(Middleware):
    """Records lifecycle events in the ledger tables (see the module docstring)."""

    def __init__(self, host: ExtensionHost, url: Callable[[], Awaitable[str]],
                 settings: LedgerSettings, *, write_timeout: float = 10.0,
                 probe_every: float = 1.0) -> None:
        self.host = host
        self._url = url
        self._conn: asyncpg.Connection | None = None  # one connection: writes are serial
        self.settings = settings
        self.batch_size = settings.ledger_batch
        self.flush_every = settings.ledger_flush_ms / 1000
        self.max_buffer = settings.ledger_buffer
        self.write_timeout = write_timeout
        self.probe_every = probe_every  # seconds between write attempts while it is down
        self._probe_at = 0.0
        # Events, or (published event, its message) pairs.
        self.buffer: deque[Event | tuple[Event, Message | None]] = deque()
        self.kept: deque[Record] = deque()  # records neither PostgreSQL nor Redis took
        self.written = self.spilled = self.drained = self.dropped = self.failed_batches = 0
        self.publisher = process_actor()
        self.consumer: str | None = None
        self.down = asyncio.Event()  # set while PostgreSQL fails, cleared when it takes one
        self._full = asyncio.Event()
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self._days: set[date] = set()
        self._ids = itertools.count(int.from_bytes(os.urandom(8), "big") >> 2)  # event ids
        # The redis transport: workers only ship batches to the stream; `tidings ingest`
        # writes them (the conversion and the database work leave the worker's process).
        self.ships = settings.ledger_transport == "redis"
        self._unlogged, self._logged_at = 0, -1e9  # drops not yet in a log line
        self._spill_seen = True  # look at the spill stream on the first healthy round
        self._spill_checked = 0.0

    # -- the hot path: append only -------------------------------------------------------

    async def around_publish(self, queue: str, count: int, call_next: Call) -> Any:
        token = _publishing.set({})
        try:
            return await call_next()
        finally:
            _publishing.reset(token)

    def before_publish(self, queue: str, message: Message) -> None:
        pending = _publishing.get()
        if pending is not None:
            pending[message.id] = message

    def on_event(self, event: Event) -> None:
        # Two or three of these per message: one append, the rest at flush time.
        kind = event.kind
        if kind not in RECORDED:
            return
        buffer = self.buffer
        if len(buffer) >= self.max_buffer - len(self.kept):
            self._drop(1)
            return
        if kind is EventKind.PUBLISHED:  # the message is known only here, in its publish
            pending = _publishing.get()
            buffer.append((event, None if pending is None else pending.get(event.message_id)))
        else:
            buffer.append(event)
        if len(buffer) >= self.batch_size:
            self._full.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    def _drop(self, count: int, *, now: bool = False) -> None:
        """Count ``count`` lost events; one ERROR line a second at most says how many."""
        self.dropped += count
        self._unlogged += count
        at = self.host.clock.monotonic()
        if now or at - self._logged_at >= 1.0:
            log.error("ledger: %d events dropped (buffer of %d and spill stream full); %d "
                      "dropped in all", self._unlogged, self.max_buffer, self.dropped)
            self._unlogged, self._logged_at = 0, at

    # -- the flusher ---------------------------------------------------------------------

    async def on_worker_start(self, worker: WorkerView) -> None:
        self.consumer = worker.consumer

    async def on_worker_stop(self, worker: WorkerView) -> None:
        await self.flush()

    async def _flush_loop(self) -> None:
        # Stopped by a flag, not by cancellation: a write is never cut short (and 3.11's
        # wait_for can swallow a cancel that races its timeout).
        while not self._stop:
            waiter = asyncio.ensure_future(self._full.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.flush_every)
            finally:
                waiter.cancel()
            if self._stop:
                return
            self._full.clear()
            while self.buffered and not self._stop:
                if not await self.flush_once() or self.buffered < self.batch_size:
                    break
            if not self._stop and not self.ships:
                await self._probe()
                await self._maybe_drain()

    @property
    def buffered(self) -> int:
        """Events waiting in this process (not yet written nor spilled)."""
        return len(self.buffer) + len(self.kept)

    def _take(self) -> list[Record]:
        """Up to a batch of lean records (see :func:`.records.lean_record`)."""
        if self.kept:
            kept = self.kept
            return [kept.popleft() for _ in range(min(self.batch_size, len(kept)))]
        path, ids = self.settings.subject_path, self._ids
        with_payload = self.settings.ledger_payloads != "none"
        pop = self.buffer.popleft
        records = []
        consumer, publisher = self.consumer, self.publisher
        for _ in range(min(self.batch_size, len(self.buffer))):
            item = pop()
            if isinstance(item, tuple):
                event, message = item
                records.append(lean_record(event, message, publisher, next(ids), with_payload,
                                           path))
            else:
                records.append(lean_record(item, item.message, consumer, next(ids),
                                           with_payload, path))
        return records

    async def flush_once(self) -> bool:
        """Write one batch (or ship it to the stream: the redis transport, or PostgreSQL
        down); False if it is kept in memory (neither took it)."""
        records = self._take()
        if not records:
            return True
        if self.ships or (self.down.is_set() and self.host.clock.time() < self._probe_at):
            return await self._spill(records)  # no write attempt until the next probe
        try:
            await asyncio.wait_for(self.write(self._with_payloads(records)), self.write_timeout)
        except asyncio.CancelledError:
            await asyncio.shield(self._spill(records))  # stopped mid-write: keep it
            raise
        except Exception as exc:
            self.failed_batches += 1
            if not self.down.is_set():
                log.warning("ledger: PostgreSQL write failed (%s: %s); events go to the "
                            "spill stream until it answers", type(exc).__name__, exc)
            self.down.set()
            self._probe_at = self.host.clock.time() + self.probe_every
            return await self._spill(records)
        if self.down.is_set():
            log.info("ledger: PostgreSQL answers again; writing the spilled events")
            self.down.clear()
            self._spill_seen = True
        return True

    def _with_payloads(self, records: list[Record]) -> list[Record]:
        mode = self.settings.ledger_payloads
        return [full_record(r, mode) for r in records]

    async def flush(self) -> None:
        """Stop the flusher (the next event starts it) and write or spill what is buffered."""
        if self._task is not None:
            self._stop = True
            self._full.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task, self._stop = None, False
        while self.buffered:
            if not await self.flush_once():
                break  # neither PostgreSQL nor Redis takes them: kept for the next flush
        if not self.ships:
            await self._probe()
            await self._maybe_drain(force=True)

    async def _probe(self) -> None:
        """While PostgreSQL is down and nothing is written: is it back?"""
        if not self.down.is_set() or self.host.clock.time() < self._probe_at:
            return
        try:
            conn = await self._connection()
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self.write_timeout)
        except Exception:
            self._conn = None
            self._probe_at = self.host.clock.time() + self.probe_every
            return
        log.info("ledger: PostgreSQL answers again; writing the spilled events")
        self.down.clear()
        self._spill_seen = True

    # -- PostgreSQL ------------------------------------------------------------------------

    async def write(self, records: Sequence[Record], *, once: bool = False) -> None:
        """Write ``records`` in one transaction (``once``: events already written are
        skipped, for batches replayed from the spill stream)."""
        events = event_rows(records)
        messages = message_rows(records)
        conn = await self._connection()
        try:
            await self._write(conn, events, messages, once)
        except BaseException:
            # A failed or cut-short write may leave the connection mid-protocol: a new one
            # next time (a pool would keep retrying its floor against a dead server).
            self._conn = None
            conn.terminate()
            raise
        self.written += len(records)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                await self._url(), timeout=self.write_timeout,
                server_settings={"search_path": self.settings.db_schema,
                                 "application_name": "tidings-ledger"})
        return self._conn

    def collect(self) -> Iterator[Metric]:
        """Prometheus metrics of the writer (``registry.register(app.ledger.writer)``)."""
        yield CounterMetricFamily("tidings_ledger_written_events", "Events written to "
                                  "PostgreSQL.", value=self.written)
        yield CounterMetricFamily("tidings_ledger_spilled_events", "Events sent to the "
                                  "Redis stream.", value=self.spilled)
        yield CounterMetricFamily("tidings_ledger_dropped_events", "Events lost: buffer and "
                                  "stream full.", value=self.dropped)
        yield GaugeMetricFamily("tidings_ledger_buffered_events", "Events waiting in this "
                                "process.", value=self.buffered)

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    async def close(self) -> None:
        """Flush, then close the writer's connection; what neither PostgreSQL nor Redis took
        by then is lost with the process, and counted and logged as dropped."""
        await self.flush()
        if self.buffered:
            left = self.buffered
            self.buffer.clear()
            self.kept.clear()
            self._drop(left, now=True)
        elif self._unlogged:
            self._drop(0, now=True)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def _write(self, conn: asyncpg.Connection, events: list[tuple[Any, ...]],
                     messages: list[list[Any]], once: bool) -> None:
        await self._partitions(conn, {row[0] for row in events})
        async with conn.transaction():
            if once:
                await conn.execute(queries.INSERT_EVENTS_ONCE, *columns(events, 12))
            else:
                try:
                    async with conn.transaction():  # a savepoint
                        await conn.copy_records_to_table(
                            "events", records=events, columns=EVENT_COLUMNS,
                            schema_name=self.settings.db_schema)
                except asyncpg.UniqueViolationError:  # a batch written before a lost reply
                    await conn.execute(queries.INSERT_EVENTS_ONCE, *columns(events, 12))
            await conn.execute(queries.UPSERT_MESSAGES,
                               *columns(messages, len(MESSAGE_COLUMNS)))

    async def _partitions(self, conn: Any, days: set[date]) -> None:
        """Create the day partitions a batch needs (and the next day's, ahead of time).

        Days older than the longest retention are left to the default partition: retention
        has dropped (or is about to drop) them.
        """
        new = days - self._days
        if not new:
            return
        oldest = max([self.settings.retention_days, *self.settings.queue_retention_days.values()])
        cutoff = datetime.fromtimestamp(self.host.clock.time(), UTC).date() - timedelta(oldest)
        for day in sorted(new | {d + timedelta(1) for d in new}):
            if day < cutoff or day in self._days:
                continue
            for table in ("messages", "events"):
                try:
                    await conn.execute(queries.create_partition(table, day))
                except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                    pass  # another process made it first
            self._days.add(day)

    # -- the spill stream ------------------------------------------------------------------

    async def _spill(self, records: list[Record]) -> bool:
        """Keep a batch PostgreSQL did not take in the Redis stream (or, failing that, in
        front of the buffer, as far as the bound allows)."""
        key = self.host.key_space.ledger_spill
        limit = self.settings.ledger_spill
        try:
            client = self.host.broker.client
            # Entries hold up to a batch each: the count of events is bounded from above.
            if limit == 0 or await client.xlen(key) * self.batch_size >= limit:
                raise OverflowError("spill stream full")
            await client.xadd(key, {"r": msgpack.packb(records, use_bin_type=True)})
        except Exception as exc:
            room = max(0, self.max_buffer - self.buffered)
            self.kept.extendleft(reversed(records[:room]))
            if len(records) > room:
                self._drop(len(records) - room)
            log.warning("ledger: spill to Redis failed (%s); %d events kept in memory",
                        type(exc).__name__, self.buffered)
            return False
        self.spilled += len(records)
        self._spill_seen = True
        return True

    async def _maybe_drain(self, force: bool = False) -> None:
        """Write what the spill stream holds (any process's), while PostgreSQL takes it."""
        now = self.host.clock.time()
        if self.down.is_set() or not self.host.broker.connected:
            return
        if not (force or self._spill_seen or now - self._spill_checked > 30):
            return
        self._spill_checked, self._spill_seen = now, False
        try:
            while await self._drain_some():
                pass
        except Exception as exc:
            log.warning("ledger: writing the spill stream failed (%s: %s); tried again later",
                        type(exc).__name__, exc)
            self._spill_seen = True

    async def ingest(self, stop: asyncio.Event) -> None:
        """Write what workers ship through the stream until ``stop`` (``tidings ingest``)."""
        while not stop.is_set():
            try:
                if not await self._drain_some(block_ms=500):
                    continue
            except Exception as exc:
                log.warning("ledger ingest: %s: %s; trying again in %.1fs",
                            type(exc).__name__, exc, self.probe_every)
                await asyncio.sleep(self.probe_every)

    async def _drain_some(self, count: int = 8, block_ms: int | None = None) -> bool:
        client = self.host.broker.client
        key = self.host.key_space.ledger_spill
        if block_ms is None and not await client.exists(key):
            return False
        try:
            await client.xgroup_create(key, _GROUP, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        me = self.publisher
        # Entries a crashed writer took and never acknowledged are taken over after 60 s.
        claimed = await client.xautoclaim(key, _GROUP, me, 60_000, "0-0", count=count)
        entries = claimed[1]
        if not entries:
            reply = await client.xreadgroup(_GROUP, me, {key: ">"}, count=count,
                                            block=block_ms)
            entries = reply[0][1] if reply else []
        if not entries:
            return False
        for entry_id, fields in entries:
            records = self._with_payloads(msgpack.unpackb(fields[b"r"], raw=False))
            await asyncio.wait_for(self.write(records, once=True), self.write_timeout)
            await client.xack(key, _GROUP, entry_id)
            await client.xdel(key, entry_id)
            self.drained += len(records)
        return True


