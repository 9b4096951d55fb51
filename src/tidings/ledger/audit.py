"""The audit trail: who did what to which target, when and from where, hash-chained.

Each record holds the SHA-256 of the record before it (``prev_hash``) and its own
(``hash``, over its fields and ``prev_hash``), so editing a row breaks its hash and
deleting one breaks the next row's ``prev_hash``; ``audit_head`` holds the last id and
hash, so even the newest row cannot go unseen. A trigger refuses UPDATE and DELETE; only
retention removes the oldest rows, and leaves the anchor the remaining chain starts from.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from ..core.errors import ValidationError

_AUDIT_LOCK = 0x7469_6461  # appends are serialised: the chain has one order


@dataclass(slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    params: dict[str, Any]
    origin: str | None
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Verification:
    """What ``audit verify`` found: ``ok`` only if every row and the head check out."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def record_hash(prev_hash: str, at: datetime, actor: str, action: str, target: str | None,
                params: dict[str, Any], origin: str | None) -> str:
    body = orjson.dumps([prev_hash, at.astimezone(UTC).isoformat(), actor, action, target,
                         params, origin], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def os_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _record(row: Any) -> AuditRecord:
    return AuditRecord(row["id"], row["at"], row["actor"], row["action"], row["target"],
                       orjson.loads(row["params"]), row["origin"], row["prev_hash"], row["hash"])


class AuditTrail:
    """Appends, lists and verifies audit records in the ledger database."""

    def __init__(self, pool: Callable[[], Awaitable[asyncpg.Pool]]) -> None:
        self._pool = pool

    async def record(self, action: str, target: str | None = None,
                     params: dict[str, Any] | None = None, *, actor: str | None = None,
                     origin: str | None = None) -> AuditRecord:
        """Append a record; ``actor`` defaults to the OS user, ``origin`` to this host."""
        if not isinstance(action, str) or not action:
            raise ValidationError("action", f"must be a non-empty string, got {action!r}")
        params = orjson.loads(orjson.dumps(params or {}, default=str))  # as JSONB gives it back
        actor = actor or os_actor()
        origin = origin or socket.gethostname()
        at = datetime.now(UTC)
        pool = await self._pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
            prev = await conn.fetchval("SELECT last_hash FROM audit_head FOR UPDATE")
            digest = record_hash(prev, at, actor, action, target, params, origin)
            row_id = await conn.fetchval(
                "INSERT INTO audit (at, actor, action, target, params, origin, prev_hash, hash) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id",
                at, actor, action, target, orjson.dumps(params).decode(), origin, prev, digest)
            await conn.execute("UPDATE audit_head SET last_id = $1, last_hash = $2", row_id,
                               digest)
        return AuditRecord(row_id, at, actor, action, target, params, origin, prev, digest)

    async def list(self, *, actor: str | None = None, action: str | None = None,
                   target: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
        """Records matching every filter given, oldest first, at most ``limit``."""
        pool = await self._pool()
        rows = await pool.fetch(
            "SELECT * FROM audit WHERE ($1::text IS NULL OR actor = $1) AND "
            "($2::text IS NULL OR action = $2) AND ($3::text IS NULL OR target = $3) AND "
            "($4::timestamptz IS NULL OR at >= $4) AND ($5::timestamptz IS NULL OR at < $5) "
            "ORDER BY id LIMIT $6", actor, action, target, since, until, limit)
        return [_record(r) for r in rows]

    async def verify(self) -> Verification:
        """Recompute the chain from the anchor to the head."""
        found = Verification()
        pool = await self._pool()
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            head = await conn.fetchrow("SELECT * FROM audit_head")
            prev, last_id = head["anchor_hash"], head["anchor_id"]
            async for row in conn.cursor("SELECT * FROM audit ORDER BY id"):
                item = _record(row)
                found.checked += 1
                if item.prev_hash != prev:
                    found.problems.append(f"record {item.id}: the record before it was "
                                          "deleted or changed (chain broken)")
                if record_hash(item.prev_hash, item.at, item.actor, item.action, item.target,
                               item.params, item.origin) != item.hash:
                    found.problems.append(f"record {item.id}: its fields were edited "
                                          "(hash mismatch)")
                prev, last_id = item.hash, item.id
            if (last_id, prev) != (head["last_id"], head["last_hash"]):
                found.problems.append(f"the newest record {head['last_id']} is missing or was "
                                      "changed (the chain ends at record "
                                      f"{last_id})")
        return found

    async def expire(self, before: datetime) -> int:
        """Remove records older than ``before`` (retention); the chain then starts at the
        first record kept."""
        pool = await self._pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
            first = await conn.fetchrow("SELECT id, prev_hash FROM audit WHERE at >= $1 "
                                        "ORDER BY id LIMIT 1", before)
            await conn.execute("SET LOCAL tidings.audit_retention = 'on'")
            status = await conn.execute("DELETE FROM audit WHERE at < $1", before)
            if first is not None:
                await conn.execute("UPDATE audit_head SET anchor_id = $1 - 1, anchor_hash = $2",
                                   first["id"], first["prev_hash"])
            else:
                await conn.execute("UPDATE audit_head SET anchor_id = last_id, "
                                   "anchor_hash = last_hash")
        return int(status.split()[-1])
