"""The app's ledger: ``app.ledger``, one per app.

::

    app = Tidings(ledger={"database_url": "postgresql://..."})  # or TIDINGS_DATABASE_URL
    app.ledger.install()            # record every lifecycle event (tidings worker does)
    traces = await app.ledger.trace(message_id)

It holds the connection pool (opened on first use), the writer middleware, the outbox
relay, the audit trail and the retention, erasure and archive jobs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from ..core.errors import ConfigError
from . import db
from .trace import MessageTrace, trace
from .writer import LedgerWriter

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost
    from .archive import Archive
    from .audit import AuditTrail
    from .erasure import ErasureReport
    from .outbox import Outbox, OutboxRelay
    from .retention import RetentionReport

log = logging.getLogger("tidings.ledger")


class Ledger:
    """PostgreSQL ledger, outbox, audit trail and retention of one app."""

    def __init__(self, app: ExtensionHost) -> None:
        self.app = app
        self.settings = app.settings.ledger
        self.embedded = False  # True: no URL means the embedded PostgreSQL (demo, tests)
        self.writer: LedgerWriter | None = None
        self.relay: OutboxRelay | None = None
        self._audit: AuditTrail | None = None
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._url: str | None = None

    @property
    def configured(self) -> bool:
        """True if a database is configured (or the embedded one allowed)."""
        return self.settings.database_url is not None or self.embedded

    @property
    def schema(self) -> str:
        return self.settings.db_schema

    def url(self) -> str:
        """The database URL: the configured one, or the embedded server's."""
        if self._url is None:
            if self.settings.database_url is not None:
                self._url = self.settings.database_url
            elif self.embedded:
                self._url = db.embedded_url(Path(self.app.settings.data_dir))
            else:
                raise ConfigError("TIDINGS_DATABASE_URL", "not set: the ledger needs a "
                                  "PostgreSQL server (postgresql://user@host:5432/db)")
        return self._url

    async def _async_url(self) -> str:
        return await asyncio.to_thread(self.url)  # the embedded server may have to start

    async def pool(self) -> asyncpg.Pool:
        """The connection pool (opened on first use)."""
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    url = await asyncio.to_thread(self.url)
                    self._pool = await db.open_pool(url, self.schema, self.settings.pool_size)
        return self._pool

    async def migrate(self) -> list[str]:
        """Create or upgrade the tidings tables; returns the migrations applied."""
        pool = await self.pool()
        async with pool.acquire() as conn:
            return await db.migrate(conn, self.schema)

    def install(self, *, relay: bool | None = None) -> LedgerWriter:
        """Record every lifecycle event of this app (and, with ``relay`` or the
        ``outbox_relay`` setting, run the outbox relay inside every worker)."""
        if self.writer is None:
            self.writer = LedgerWriter(self.app, self._async_url, self.settings)
            self.app.add_middleware(self.writer)
            if self.settings.retention_in_workers:
                self.app.add_worker_service(self.retention_loop)
        if relay if relay is not None else self.settings.outbox_relay:
            self.relay_in_workers()
        return self.writer

    async def ingest(self, stop: asyncio.Event) -> None:
        """Write the events workers ship through Redis (``ledger_transport="redis"``)
        until ``stop`` is set: what ``tidings ingest`` runs."""
        writer = LedgerWriter(self.app, self._async_url, self.settings)
        try:
            await writer.ingest(stop)
        finally:
            await writer.close()

    def relay_in_workers(self) -> OutboxRelay:
        from .outbox import OutboxRelay

        if self.relay is None:
            self.relay = OutboxRelay(self.app, self.pool, self.settings)
            self.app.add_worker_service(self.relay.run_in_worker)
        return self.relay

    async def trace(self, message_id: str | None = None, **by: Any) -> list[MessageTrace]:
        """The timeline of a message by id, or of the messages with a ``correlation_id``,
        ``idempotency_key`` or ``subject`` (see :func:`tidings.ledger.trace.trace`)."""
        pool = await self.pool()
        async with pool.acquire() as conn:
            return await trace(conn, message_id, **by)

    @property
    def outbox(self) -> Outbox:
        """The outbox of this app's schema: ``await app.ledger.outbox.publish(conn, ...)``."""
        from .outbox import Outbox

        return Outbox(self.schema)

    @property
    def audit(self) -> AuditTrail:
        """The audit trail (hash-chained records of administrative operations)."""
        from .audit import AuditTrail

        if self._audit is None:
            self._audit = AuditTrail(self.pool)
        return self._audit

    def archive(self) -> Archive | None:
        """The S3 archive (``TIDINGS_ARCHIVE_URL``), or None if none is configured."""
        from .archive import Archive

        url = self.settings.archive_url
        return None if url is None else Archive(url, self.settings.s3_endpoint_url)

    async def run_retention(self, now: datetime | None = None) -> RetentionReport:
        """Drop (archiving first) and delete what is past its retention, as of ``now``
        (default: the app's clock)."""
        from .retention import run_retention

        when = now or datetime.fromtimestamp(self.app.clock.time(), UTC)
        pool = await self.pool()
        async with pool.acquire() as conn:
            return await run_retention(conn, self.settings, when, self.archive(), self.audit)

    async def retention_loop(self, worker: Any, every: float = 3600.0) -> None:
        """Run retention hourly inside a worker (a lock keeps it to one process at once)."""
        while True:
            try:
                report = await self.run_retention()
                if report.dropped_days or report.deleted_rows:
                    log.info("ledger retention: %s", report.as_dict())
            except Exception as exc:
                log.warning("ledger retention failed (%s: %s); tried again in %.0fs",
                            type(exc).__name__, exc, every)
            await self.app.clock.sleep(every)

    async def restore(self, day: date, queue: str | None = None) -> int:
        """Load an archived day (or one queue of it) back into the ledger; rows loaded."""
        archive = self.archive()
        if archive is None:
            raise ConfigError("TIDINGS_ARCHIVE_URL", "not set: there is no archive to restore")
        pool = await self.pool()
        async with pool.acquire() as conn:
            return await archive.restore(conn, day, queue)

    async def erase(self, subject: str, *, actor: str | None = None) -> ErasureReport:
        """GDPR erasure of ``subject`` everywhere (see :mod:`tidings.ledger.erasure`)."""
        from .erasure import erase_subject

        return await erase_subject(self.app, self, subject, actor=actor)

    async def flush(self) -> None:
        """Write what the writer holds (producers call it before they exit)."""
        if self.writer is not None:
            await self.writer.flush()

    async def app_closing(self) -> None:
        """The app closes: flush, then close the connections."""
        if self.writer is not None:
            await self.writer.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                pool.terminate()
