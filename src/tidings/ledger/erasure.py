"""GDPR erasure: everything about one data subject, wherever tidings keeps it.

A message's subject comes from ``TIDINGS_SUBJECT_PATH`` (a payload path or a header). The
erasure removes, and counts: the subject's messages queued, delayed and dead-lettered in
Redis (every queue of the key prefix), its ledger rows and their events, its outbox rows,
and its messages in archived objects (rewritten without them). The audit record of the
erasure names the subject by its SHA-256 only, so the trail itself keeps nothing of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from ..core.errors import ConfigError, ValidationError
from ..core.message import Message, decode
from ..queues import registry, scripts
from .records import subject_of

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost
    from ..queues.queue import Queue
    from .extension import Ledger

_PAGE = 1000


@dataclass(slots=True)
class ErasureReport:
    """What was removed of one subject, place by place."""

    subject_sha256: str
    queued: int = 0
    delayed: int = 0
    dead_lettered: int = 0
    ledger_messages: int = 0
    ledger_events: int = 0
    outbox_rows: int = 0
    archived_messages: int = 0
    spilled_events: int = 0  # waiting in the ledger's Redis stream
    idempotency_keys: int = 0  # dedupe keys of the subject's messages (they may name it)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _of(message: Message | None, path: str, subject: str) -> bool:
    return message is not None and subject_of(message, path) == subject


async def _erase_queue(queue: Queue, path: str, subject: str, report: ErasureReport,
                       keys: set[str]) -> None:
    client = queue.app.broker.client
    k = queue.keys
    found: list[tuple[int, str, str]] = []
    for lane, key in enumerate(k.lanes):
        start = "-"
        while True:
            entries = await client.xrange(key, start, "+", _PAGE)
            for entry_id, fields in entries:
                raw = fields.get(b"m")
                message = decode(raw) if raw else None
                if message is not None and _of(message, path, subject):
                    found.append((lane, entry_id.decode(), message.id))
                    _dedupe_key(queue, message, keys)
            if len(entries) < _PAGE:
                break
            start = "(" + entries[-1][0].decode()
    if found:
        report.queued += int(await queue.app.broker.run(scripts.erase_queued(k, found)))
    async for msg_id, body in client.hscan_iter(k.delayed_bodies, count=_PAGE):
        raw = body.split(b"|", 2)[-1]
        try:
            message = decode(raw)
        except ValueError:
            continue
        if _of(message, path, subject) and await queue.cancel(msg_id.decode()):
            report.delayed += 1
            _dedupe_key(queue, message, keys)
    dead = []
    async for entry in queue.dlq.scan(lambda e: _of(e.message, path, subject)):
        dead.append(entry.entry_id)
        if entry.message is not None:
            _dedupe_key(queue, entry.message, keys)
    if dead:
        report.dead_lettered += int(await queue.app.broker.run(scripts.dlq_purge(k, dead)))


def _dedupe_key(queue: Queue, message: Message, keys: set[str]) -> None:
    if message.idempotency_key is not None:
        keys.add(queue.keys.idempotency(message.idempotency_key))


async def _erase_spill(app: ExtensionHost, subject: str, report: ErasureReport) -> None:
    """Rewrite the ledger's stream entries that hold events of the subject without them
    (so an ingester does not write them back)."""
    client = app.broker.client
    key = app.key_space.ledger_spill
    for entry_id, fields in await client.xrange(key):
        records = msgpack.unpackb(fields[b"r"], raw=False)
        kept = [r for r in records if r[14] != subject]
        if len(kept) == len(records):
            continue
        if kept:
            await client.xadd(key, {"r": msgpack.packb(kept, use_bin_type=True)})
        await client.xdel(key, entry_id)
        report.spilled_events += len(records) - len(kept)


async def _erase_database(ledger: Ledger, subject: str, path: str,
                          report: ErasureReport, keys: set[str]) -> None:
    pool = await ledger.pool()
    where, _, rest = path.partition(".")
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch("SELECT queue, idempotency_key FROM messages WHERE "
                                    "subject = $1 AND idempotency_key IS NOT NULL", subject):
            keys.add(ledger.app.key_space.queue(row[0]).idempotency(row[1]))
        ids = await conn.fetch("SELECT day, message_id FROM messages WHERE subject = $1",
                               subject)
        status = await conn.execute(
            "DELETE FROM events e USING unnest($1::date[], $2::text[]) AS m(day, message_id) "
            "WHERE e.day = m.day AND e.message_id = m.message_id",
            [r[0] for r in ids], [r[1] for r in ids])
        report.ledger_events = int(status.split()[-1])
        status = await conn.execute("DELETE FROM messages WHERE subject = $1", subject)
        report.ledger_messages = int(status.split()[-1])
        column = "payload" if where == "payload" else "headers"
        status = await conn.execute(
            f"DELETE FROM outbox WHERE subject = $1 OR {column} #>> $2::text[] = $1",
            subject, rest.split("."))
        report.outbox_rows = int(status.split()[-1])


async def erase_subject(app: ExtensionHost, ledger: Ledger, subject: str, *,
                        actor: str | None = None) -> ErasureReport:
    """Remove everything about ``subject`` (see the module docstring); the report says
    what went from where."""
    if not isinstance(subject, str) or not subject:
        raise ValidationError("subject", f"must be a non-empty string, got {subject!r}")
    path = ledger.settings.subject_path
    if path is None:
        raise ConfigError("TIDINGS_SUBJECT_PATH", "not set: say where a message names its "
                          "data subject (payload.user_id or header.subject)")
    report = ErasureReport(hashlib.sha256(subject.encode()).hexdigest())
    await ledger.flush()  # this process's events of the subject first reach the tables
    names = set(app.queues) | set(await registry.registered_names(app.broker, app.key_space))
    keys: set[str] = set()
    for name in sorted(names):
        queue = app.queues.get(name)
        if queue is None:  # a queue the server knows: declared with default settings
            queue = app.queue(name)  # type: ignore[attr-defined]
        await _erase_queue(queue, path, subject, report, keys)
    await _erase_spill(app, subject, report)
    if ledger.configured:
        await _erase_database(ledger, subject, path, report, keys)
    if keys:
        report.idempotency_keys = int(await app.broker.client.delete(*keys))
    archive = ledger.archive()
    if archive is not None:
        report.archived_messages = await archive.erase(subject)
    if ledger.configured:
        await ledger.audit.record("erase", f"sha256:{report.subject_sha256}",
                                  report.as_dict(), actor=actor)
    return report
