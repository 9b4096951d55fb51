"""The transactional outbox: enqueue a message in the same transaction as the business
change that causes it, so a rollback never sends and a commit never loses.

::

    from tidings.ledger.outbox import outbox

    async with conn.transaction():               # asyncpg; psycopg and SQLAlchemy too
        await conn.execute("UPDATE users SET ...")
        await outbox.publish(conn, "email", {"to": "ann@example.com"})

A relay (``tidings outbox relay``, or inside every worker with ``outbox_relay``) takes
committed rows with ``FOR UPDATE SKIP LOCKED`` (any number of relays share the work),
publishes them with the row id as the idempotency key, and marks them sent in the same
transaction. A relay that dies between the publish and the commit leaves the rows locked
only until its connection goes; the next relay publishes them again and the queue's
dedupe window (``dedupe_window``, 24 h by default) makes that a no-op: every committed row
is enqueued exactly once. It is woken by LISTEN/NOTIFY, and polls in case a notification
was missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from ..core.errors import TidingsError, ValidationError
from ..core.message import Priority, check_payload, duration_ms
from ..queues.queue import Outgoing
from .db import quote_ident

if TYPE_CHECKING:
    from ..core.ledger_settings import LedgerSettings
    from ..queues.host import ExtensionHost
    from ..queues.queue import Queue

log = logging.getLogger("tidings.ledger")
_COLUMNS = ("queue", "payload", "priority", "headers", "idempotency_key", "delay_ms", "subject")


class Outbox:
    """Writes outbox rows through the caller's own connection (schema ``schema``)."""

    def __init__(self, schema: str = "tidings") -> None:
        self.table = f"{quote_ident(schema)}.outbox"

    async def publish(self, conn: Any, queue: str, payload: Any, *,
                      priority: Priority | str = Priority.NORMAL,
                      headers: dict[str, str] | None = None,
                      idempotency_key: str | None = None,
                      correlation_id: str | None = None,
                      delay: timedelta | float | None = None,
                      subject: str | None = None) -> int:
        """Insert a message for ``queue`` into the outbox in ``conn``'s transaction; returns
        the row id. ``conn``: an asyncpg connection, a psycopg async connection or an
        SQLAlchemy async session or connection."""
        values = self._values(queue, payload, priority, headers, idempotency_key,
                              correlation_id, delay, subject)
        module = type(conn).__module__
        cols = ", ".join(_COLUMNS)
        if module.startswith("asyncpg"):
            return int(await conn.fetchval(
                f"INSERT INTO {self.table} ({cols}) VALUES ($1, $2::jsonb, $3, $4::jsonb, $5, "
                "$6, $7) RETURNING id", *values))
        if module.startswith("psycopg"):
            cursor = await conn.execute(
                f"INSERT INTO {self.table} ({cols}) VALUES (%s, %s::jsonb, %s, %s::jsonb, %s, "
                "%s, %s) RETURNING id", values)
            return int((await cursor.fetchone())[0])
        if module.startswith("sqlalchemy"):
            from sqlalchemy import text

            result = await conn.execute(text(
                f"INSERT INTO {self.table} ({cols}) VALUES (:queue, CAST(:payload AS jsonb), "
                ":priority, CAST(:headers AS jsonb), :idempotency_key, :delay_ms, :subject) "
                "RETURNING id"), dict(zip(_COLUMNS, values, strict=True)))
            return int(result.scalar_one())
        raise ValidationError("conn", f"not a connection tidings knows: {type(conn).__name__} "
                              "(give an asyncpg or psycopg connection or an SQLAlchemy "
                              "AsyncSession)")

    @staticmethod
    def _values(queue: str, payload: Any, priority: Priority | str,
                headers: dict[str, str] | None, key: str | None, correlation_id: str | None,
                delay: timedelta | float | None, subject: str | None) -> tuple[Any, ...]:
        if not isinstance(queue, str) or not queue:
            raise ValidationError("queue", f"must be a queue name, got {queue!r}")
        check_payload(payload)
        label = Priority.parse(priority).label
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 512):
            raise ValidationError("idempotency_key", "must be a non-empty string of <= 512 chars")
        headers = dict(headers or {})
        if correlation_id is not None:
            headers["correlation_id"] = correlation_id
        if any(not isinstance(k, str) or not isinstance(v, str) for k, v in headers.items()):
            raise ValidationError("headers", "names and values must be strings")
        delay_ms = None if delay is None else duration_ms(delay, "delay")
        return (queue, orjson.dumps(payload).decode(), label,
                orjson.dumps(headers).decode() if headers else None, key, delay_ms, subject)


outbox = Outbox()  # the default schema's outbox


class OutboxRelay:
    """Moves committed outbox rows to their queues (see the module docstring)."""

    def __init__(self, app: ExtensionHost, pool: Callable[[], Awaitable[asyncpg.Pool]],
                 settings: LedgerSettings) -> None:
        self.app = app
        self._pool = pool
        self.schema = settings.db_schema
        self.batch = settings.outbox_batch
        self.poll = settings.outbox_poll
        self.chunk_size = settings.outbox_chunk
        self.relayed = self.failed = 0
        self._wake = asyncio.Event()

    async def relay_once(self) -> int:
        """Relay one batch of committed rows; returns how many rows it took."""
        pool = await self._pool()
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, queue, payload, priority, headers, idempotency_key, delay_ms "
                "FROM outbox WHERE sent_at IS NULL AND error IS NULL ORDER BY id LIMIT $1 "
                "FOR UPDATE SKIP LOCKED", self.batch)
            if not rows:
                return 0
            sent: dict[int, str] = {}
            failed: dict[int, str] = {}
            by_queue: dict[str, list[Any]] = {}
            for row in rows:
                by_queue.setdefault(row["queue"], []).append(row)
            for name, group in by_queue.items():
                await self._publish(name, group, sent, failed)
            await conn.execute(
                "UPDATE outbox SET sent_at = now(), message_id = m.mid FROM "
                "unnest($1::bigint[], $2::text[]) AS m(id, mid) WHERE outbox.id = m.id",
                list(sent), list(sent.values()))
            if failed:
                await conn.execute(
                    "UPDATE outbox SET error = m.error FROM unnest($1::bigint[], $2::text[]) "
                    "AS m(id, error) WHERE outbox.id = m.id", list(failed), list(failed.values()))
        self.relayed += len(sent)
        self.failed += len(failed)
        return len(rows)

    async def _queue(self, name: str) -> Queue | None:
        found = self.app.queues.get(name)
        if found is None:
            finder = getattr(self.app, "find_queue", None)  # the app: a queue the server has
            found = None if finder is None else await finder(name)
        return found

    def _outgoing(self, row: Any) -> Outgoing:
        headers = None if row["headers"] is None else orjson.loads(row["headers"])
        key = row["idempotency_key"] or f"outbox:{self.schema}:{row['id']}"
        delay = None if row["delay_ms"] is None else row["delay_ms"] / 1000
        return Outgoing(orjson.loads(row["payload"]), row["priority"], key, headers, delay)

    async def _publish(self, name: str, rows: list[Any], sent: dict[int, str],
                       failed: dict[int, str]) -> None:
        """Publish one queue's rows (in chunks); a row the queue refuses as invalid is
        marked with the reason, the others go on. Server errors roll the batch back."""
        queue = await self._queue(name)
        if queue is None:
            for row in rows:
                failed[row["id"]] = f"unknown queue {name!r}"
            return
        try:
            ids = await queue.publish_many([self._outgoing(r) for r in rows],
                                           chunk_size=self.chunk_size)
            sent.update(zip([r["id"] for r in rows], ids, strict=True))
            return
        except ValidationError:
            pass  # one row is bad: find it, publish the others
        for row in rows:
            try:
                sent[row["id"]] = (await queue.publish_many([self._outgoing(row)]))[0]
            except ValidationError as exc:
                failed[row["id"]] = str(exc)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set (or cancelled): woken by NOTIFY, polling otherwise."""
        stop = stop or asyncio.Event()
        listener: Any = None
        try:
            while not stop.is_set():
                try:
                    if listener is None:
                        listener = await self._listen()
                    self._wake.clear()  # before the read: a NOTIFY during it wakes the wait
                    while await self.relay_once() >= self.batch and not stop.is_set():
                        pass
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        TidingsError) as exc:
                    log.warning("outbox relay: %s: %s; trying again in %.1fs",
                                type(exc).__name__, exc, self.poll)
                    await self._unlisten(listener)
                    listener = None
                await self._wait(stop)
        finally:
            await self._unlisten(listener)

    async def _wait(self, stop: asyncio.Event) -> None:
        """Until a NOTIFY, ``stop`` or the poll interval, whichever comes first."""
        waiter = asyncio.ensure_future(self._wake.wait())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=self.poll,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def run_in_worker(self, worker: Any) -> None:
        await self.run(None)

    async def _listen(self) -> Any:
        pool = await self._pool()
        conn = await pool.acquire()
        await conn.add_listener(f"{self.schema}_outbox", self._notified)
        return conn

    def _notified(self, *args: Any) -> None:
        self._wake.set()

    async def _unlisten(self, conn: Any) -> None:
        if conn is None:
            return
        try:
            await conn.remove_listener(f"{self.schema}_outbox", self._notified)
            await (await self._pool()).release(conn)
        except (Exception, asyncio.CancelledError):
            conn.terminate()  # cancelled on the way out: the pool must not wait for it
            await (await self._pool()).release(conn)
