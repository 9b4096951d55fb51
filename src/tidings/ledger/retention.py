"""Retention: how long the ledger keeps rows, payloads, sent outbox rows and audit records.

Ledger tables are partitioned by day, so a day past the longest retention goes by
``DROP TABLE`` of its partitions (archived to S3 first when an archive is configured); a
queue kept shorter than that is deleted from the day partitions it has left behind (only
those days, by its own column), payloads kept shorter than metadata are set to NULL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import queries

if TYPE_CHECKING:
    from ..core.ledger_settings import LedgerSettings
    from .archive import Archive
    from .audit import AuditTrail

_RETENTION_LOCK = 0x7469_6472  # one retention run at a time per database


@dataclass(slots=True)
class RetentionReport:
    dropped_days: list[str] = field(default_factory=list)
    archived_objects: int = 0
    deleted_rows: int = 0  # messages + events of queues kept shorter, and the default part
    payloads_cleared: int = 0
    outbox_deleted: int = 0
    audit_deleted: int = 0
    skipped: bool = False  # another process holds the retention lock

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count(status: str) -> int:
    return int(status.split()[-1])


async def partition_days(conn: Any, table: str) -> list[date]:
    days = []
    for row in await conn.fetch(queries.LIST_PARTITIONS, table):
        suffix = row[0].rsplit("_", 1)[-1]
        if suffix.isdigit():
            days.append(datetime.strptime(suffix, "%Y%m%d").date())
    return sorted(days)


async def run_retention(conn: Any, settings: LedgerSettings, now: datetime,
                        archive: Archive | None = None, audit: AuditTrail | None = None
                        ) -> RetentionReport:
    """Apply every retention rule as of ``now`` (see the module docstring)."""
    report = RetentionReport()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK):
        report.skipped = True
        return report
    try:
        await _ledger(conn, settings, now.astimezone(UTC).date(), archive, report)
        if settings.payload_retention_days is not None:
            cutoff = now.date() - timedelta(settings.payload_retention_days)
            report.payloads_cleared = _count(await conn.execute(
                "UPDATE messages SET payload = NULL WHERE day < $1 AND payload IS NOT NULL",
                cutoff))
        report.outbox_deleted = _count(await conn.execute(
            "DELETE FROM outbox WHERE sent_at < $1",
            now - timedelta(settings.outbox_retention_days)))
        if audit is not None:
            report.audit_deleted = await audit.expire(
                now - timedelta(settings.audit_retention_days))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK)
    return report


async def _ledger(conn: Any, settings: LedgerSettings, today: date, archive: Archive | None,
                  report: RetentionReport) -> None:
    longest = max([settings.retention_days, *settings.queue_retention_days.values()])
    drop_before = today - timedelta(longest)
    days = await partition_days(conn, "messages")
    for day in days:
        if day >= drop_before:
            continue
        if archive is not None:
            report.archived_objects += len(await archive.write_day(conn, day))
        async with conn.transaction():
            for table in ("events", "messages"):
                await conn.execute(f"DROP TABLE IF EXISTS {queries.partition_name(table, day)}")
        report.dropped_days.append(day.isoformat())
    for table in ("events", "messages"):  # rows of dropped days that came in late
        report.deleted_rows += _count(await conn.execute(
            f"DELETE FROM {table}_default WHERE day < $1", drop_before))
    overrides = settings.queue_retention_days
    for day in (d for d in days if d >= drop_before):
        # Which queues' rows of this day have expired: by default every queue's once the
        # default retention has passed, except those kept longer; else those kept shorter.
        default_expired = day < today - timedelta(settings.retention_days)
        kept = [q for q, n in overrides.items() if day >= today - timedelta(n)]
        expired = [q for q, n in overrides.items() if day < today - timedelta(n)]
        if not default_expired and not expired:
            continue
        found = await conn.fetchval(
            f"SELECT count(*) FROM {queries.partition_name('messages', day)} WHERE "
            "($1 AND NOT (queue = ANY($2))) OR (NOT $1 AND queue = ANY($3))",
            default_expired, kept, expired)
        if not found:
            continue
        if archive is not None:
            report.archived_objects += len(await archive.write_day(conn, day))
        async with conn.transaction():
            for table in ("events", "messages"):
                report.deleted_rows += _count(await conn.execute(
                    f"DELETE FROM {queries.partition_name(table, day)} WHERE "
                    "($1 AND NOT (queue = ANY($2))) OR (NOT $1 AND queue = ANY($3))",
                    default_expired, kept, expired))
