"""Settings of the PostgreSQL ledger, outbox, audit trail, retention and archive.

Read by :mod:`tidings.ledger`. ``TIDINGS_DATABASE_URL`` selects the server; unset, the
ledger is off (``tidings demo`` and the tests use an embedded PostgreSQL instead). The
other variables are ``TIDINGS_DB_SCHEMA``, ``TIDINGS_LEDGER_PAYLOADS`` and so on, one per
field below; in ``tidings.toml`` they sit under ``[ledger]``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
RETENTION_DAYS = (7, 90)


def check_database_url(value: str | None) -> str | None:
    """A ``postgresql://`` (or ``postgres://``) URL; the message never repeats it."""
    if value is None or value == "":
        return None
    if not re.match(r"^postgres(ql)?://", value):
        raise ValueError("must be a postgresql:// URL (postgresql://user@host:5432/db)")
    return value


class LedgerSettings(BaseSettings):
    """Where the ledger lives and how much of each message it keeps, for how long."""

    model_config = SettingsConfigDict(env_prefix="TIDINGS_", extra="forbid")

    database_url: str | None = Field(None, description="PostgreSQL; unset: ledger off")
    db_schema: str = Field("tidings", pattern=SCHEMA_PATTERN,
                           description="schema holding the tidings tables")
    pool_size: int = Field(4, ge=1, le=100)
    # What is kept of a payload: nothing, its SHA-256, or the payload itself (JSONB).
    ledger_payloads: Literal["none", "hash", "full"] = "hash"
    # Where a message names its data subject: "payload.user_id" (a dotted path in the
    # payload) or "header.subject"; unset, messages have no subject (erasure finds none).
    subject_path: str | None = Field(None, pattern=r"^(payload|header)\.[A-Za-z0-9_.\-]+$")
    # direct: each worker writes its events to PostgreSQL; redis: workers only ship them to
    # a Redis stream and `tidings ingest` writes them (the worker's process does least).
    ledger_transport: Literal["direct", "redis"] = "direct"
    ledger_batch: int = Field(2000, ge=1, le=100_000, description="rows per write")
    ledger_flush_ms: int = Field(200, ge=1, le=60_000, description="write at least this often")
    ledger_buffer: int = Field(200_000, ge=100, le=10_000_000,
                               description="events held in memory while PostgreSQL is down")
    ledger_spill: int = Field(5_000_000, ge=0,
                              description="events held in a Redis stream past the buffer")
    retention_days: int = Field(30, ge=RETENTION_DAYS[0], le=RETENTION_DAYS[1])
    queue_retention_days: dict[str, int] = Field(default_factory=dict)
    payload_retention_days: int | None = Field(None, ge=1, le=RETENTION_DAYS[1])
    retention_in_workers: bool = Field(True, description="workers run retention hourly")
    audit_retention_days: int = Field(400, ge=30, le=3650)
    outbox_retention_days: int = Field(7, ge=1, le=90)
    outbox_relay: bool = Field(True, description="every worker relays the outbox")
    outbox_batch: int = Field(500, ge=1, le=10_000, description="rows per relay transaction")
    outbox_chunk: int = Field(100, ge=1, le=10_000, description="messages per publish")
    outbox_poll: float = Field(1.0, gt=0, le=60, description="seconds; LISTEN wakes sooner")
    archive_url: str | None = Field(None, pattern=r"^s3://[a-z0-9.\-]{3,63}(/.*)?$")
    s3_endpoint_url: str | None = None

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_database_url(value)

    @field_validator("queue_retention_days")
    @classmethod
    def _queue_days(cls, value: dict[str, int]) -> dict[str, int]:
        low, high = RETENTION_DAYS
        for queue, days in value.items():
            if type(days) is not int or not low <= days <= high:
                raise ValueError(f"{queue}: must be {low} to {high} days, got {days!r}")
        return value

    def retention_of(self, queue: str) -> int:
        """Days the ledger keeps ``queue``'s rows."""
        return self.queue_retention_days.get(queue, self.retention_days)
