"""PostgreSQL commands: ``tidings db migrate``, ``tidings trace``, ``tidings outbox``,
``tidings audit``, ``tidings erase``, ``tidings retention`` and ``tidings archive``.

Registered on the main command in :mod:`tidings.cli.main`; every administrative command
runs as an authorised operation (:mod:`tidings.cli.authz`), whose outcome reaches the
ledger's audit trail when a database is configured.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer

from .authz import authorized
from .output import show_record, show_table
from .support import (
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    console,
    emit_json,
    load_app,
    run,
)

ledger_cli = Cli(help="PostgreSQL ledger, outbox, audit trail.", no_args_is_help=False)
db_cli = Cli(help="The tidings tables in PostgreSQL (TIDINGS_DATABASE_URL).")
outbox_cli = Cli(help="The transactional outbox: relay, status.")
audit_cli = Cli(help="The audit trail: list, verify.")
archive_cli = Cli(help="Archived ledger days in S3: list, restore.")
retention_cli = Cli(help="Retention: drop expired ledger partitions (archiving them first).")
ledger_cli.add_typer(db_cli, name="db")
ledger_cli.add_typer(outbox_cli, name="outbox")
ledger_cli.add_typer(audit_cli, name="audit")
ledger_cli.add_typer(archive_cli, name="archive")
ledger_cli.add_typer(retention_cli, name="retention")



@db_cli.command()
def migrate(app_spec: AppOption = None) -> None:
    """Create or upgrade the tidings tables (idempotent: only missing versions run)."""
    app = load_app(app_spec)

    async def body() -> list[str]:
        async with authorized(app, "ledger:migrate", "db.migrate", "") as operation:
            operation.detail["applied"] = applied = await app.ledger.migrate()
        return applied

    applied = run(app, body)
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@db_cli.command()
def stop() -> None:
    """Stop the embedded PostgreSQL of this directory (tidings demo --ledger started it)."""
    from ..core.settings import load_settings
    from ..ledger.db import stop_embedded

    data_dir = load_settings().data_dir
    if not stop_embedded(data_dir):
        raise CommandFailed(f"no embedded PostgreSQL runs in {data_dir}/postgres")
    console.print("stopped")


@ledger_cli.command()
def trace(
    message_id: Annotated[str | None, typer.Argument(help="The message id.")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Every message of it.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Messages with this key.")] = None,
    recipient: Annotated[str | None, typer.Option(
        help="Messages to this data subject (TIDINGS_SUBJECT_PATH names where it is).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """A message's timeline: published by whom, each delivery, the outcome."""
    app = load_app(app_spec)

    async def body() -> Any:
        return await app.ledger.trace(message_id, correlation_id=correlation_id,
                                      idempotency_key=idempotency_key, subject=recipient,
                                      limit=limit)

    traces = run(app, body)
    if json:
        emit_json([t.as_dict() for t in traces])
        return
    if not traces:
        raise CommandFailed("the ledger has no such message")
    for item in traces:
        show_record(console, {"message": item.message_id, "queue": item.queue,
                              "state": item.state, "attempts": item.attempts,
                              "published by": item.publisher, "correlation id":
                              item.correlation_id, "reason": item.reason})
        show_table(console, ["at", "event", "attempt", "by", "duration", "error / reason"],
                   [[e.at.isoformat(timespec="milliseconds"), e.kind, e.attempt, e.actor or "",
                     "" if e.duration is None else f"{e.duration * 1000:.1f} ms",
                     e.error or e.reason or ""] for e in item.events],
                   ids=["at"], text=["error / reason"])


@outbox_cli.command()
def relay(app_spec: AppOption = None) -> None:
    """Move committed outbox rows to their queues until SIGTERM or SIGINT."""
    app = load_app(app_spec, hint="MODULE:APP")
    run(app, _until_signal(app.ledger.relay_in_workers().run))


def _until_signal(work: Any) -> Any:
    async def body() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await work(stop)

    return body


@ledger_cli.command()
def ingest(app_spec: AppOption = None) -> None:
    """Write the ledger events workers ship through Redis (TIDINGS_LEDGER_TRANSPORT=redis)
    to PostgreSQL, until SIGTERM or SIGINT. Run one or more anywhere."""
    app = load_app(app_spec)
    run(app, _until_signal(app.ledger.ingest))


@outbox_cli.command()
def status(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Rows waiting, sent and refused (with the reason) in the outbox."""
    app = load_app(app_spec)

    async def body() -> Any:
        pool = await app.ledger.pool()
        return dict(await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL AND error IS NULL) AS waiting, "
            "count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent, "
            "count(*) FILTER (WHERE error IS NOT NULL) AS refused FROM outbox"))

    found = run(app, body)
    emit_json(found) if json else show_record(console, found)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time",
                                 param_hint=name) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@audit_cli.command("list")
def audit_list(
    actor: Annotated[str | None, typer.Option()] = None,
    action: Annotated[str | None, typer.Option(help="e.g. 'dlq replay'")] = None,
    target: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="ISO time (UTC unless given).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time (UTC unless given).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Audit records matching every filter given, oldest first."""
    app = load_app(app_spec)
    start, end = _when(since, "--since"), _when(until, "--until")

    async def body() -> Any:
        return await app.ledger.audit.list(actor=actor, action=action, target=target,
                                           since=start, until=end, limit=limit)

    records = run(app, body)
    if json:
        emit_json([r.as_dict() for r in records])
        return
    show_table(console, ["id", "at", "actor", "action", "target", "params", "from"],
               [[r.id, r.at.isoformat(timespec="seconds"), r.actor, r.action, r.target or "",
                 r.params, r.origin or ""] for r in records], ids=["id", "at"], text=["params"])


@audit_cli.command()
def verify(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Check the hash chain: exit 1 if any record was edited or deleted."""
    app = load_app(app_spec)
    found = run(app, app.ledger.audit.verify)
    if json:
        emit_json({"ok": found.ok, "checked": found.checked, "problems": found.problems})
    else:
        for problem in found.problems:
            console.print(problem)
        console.print(f"{found.checked} records checked: "
                      f"{'the chain is intact' if found.ok else 'TAMPERED'}")
    if not found.ok:
        raise typer.Exit(1)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)") from None

@ledger_cli.command()
def erase(
    subject: Annotated[str, typer.Option(help="The data subject (user id) to erase.")],
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """GDPR erasure: remove the subject's messages from Redis, ledger, outbox and archive."""
    app = load_app(app_spec)

    async def body() -> Any:
        return await app.ledger.erase(subject)

    report = run(app, body).as_dict()
    emit_json(report) if json else show_record(console, report)


@retention_cli.command("run")
def retention_run(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Apply retention now: archive and drop expired days, clear old payloads."""
    app = load_app(app_spec)

    async def body() -> Any:
        async with authorized(app, "ledger:retention", "retention.run", ""):
            return await app.ledger.run_retention()

    report = run(app, body).as_dict()
    emit_json(report) if json else show_record(console, report)


@archive_cli.command()
def restore(
    day: Annotated[str, typer.Argument(metavar="DAY", help="YYYY-MM-DD")],
    queue: Annotated[str | None, typer.Option(help="Only this queue's object.")] = None,
    app_spec: AppOption = None,
) -> None:
    """Load an archived day back into the ledger, for investigation (tidings trace)."""
    app = load_app(app_spec)
    when = _day(day)

    async def body() -> int:
        async with authorized(app, "ledger:restore", "archive.restore", day,
                              queue=queue) as operation:
            operation.detail["count"] = count = await app.ledger.restore(when, queue)
        return count

    console.print(f"{run(app, body)} messages restored")


@ledger_cli.command()
def backup(
    directory: Annotated[str, typer.Argument(metavar="DIR", help="Where backups are kept.")],
    keep_days: Annotated[int, typer.Option(min=1, help="Remove older backups.")] = 30,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Back up the prefix's Redis keys (one consistent read per 5,000 keys) and, with a
    database configured, the tidings schema (pg_dump), into a new folder of DIR."""
    from pathlib import Path

    from ..ledger.backup import backup as run_backup

    app = load_app(app_spec)
    ledger = app.ledger if app.settings.ledger.database_url else None

    async def body() -> Any:
        async with authorized(app, "backup:create", "backup", directory, keep_days=keep_days):
            return await run_backup(app, ledger, Path(directory), keep_days=keep_days)

    report = run(app, body).as_dict()
    emit_json(report) if json else show_record(console, report)


@ledger_cli.command("restore")
def restore_backup(
    path: Annotated[str, typer.Argument(metavar="PATH", help="A backup folder, or DIR (its "
                                                             "newest backup).")],
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Restore a backup: every key of the prefix (replacing what is there) and the schema."""
    from pathlib import Path

    from ..ledger.backup import restore as run_restore

    app = load_app(app_spec)
    ledger = app.ledger if app.settings.ledger.database_url else None

    async def body() -> Any:
        # Restoring replaces the audit stream too; the "done" record is written after it.
        async with authorized(app, "backup:restore", "restore", path):
            return await run_restore(app, ledger, Path(path))

    report = run(app, body).as_dict()
    emit_json(report) if json else show_record(console, report)
