"""The ``tidings`` command: run workers, publish, and see and control queues.

Exit codes and error handling: :mod:`tidings.cli_support`. Tables and progress:
:mod:`tidings.cli_output`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ..core.errors import QueueNotEmptyError
from ..core.message import Priority
from ..queues.dead_letters import DeadLetterCount, make_filter
from ..queues.views import as_text, dead_letter_view, view_of
from .authz import on_queue
from .output import progress, show_record, show_table
from .support import (
    EXIT_NOTHING,
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    YesOption,
    console,
    emit_json,
    finite,
    load_app,
    positive,
    print_count,
    read_payload,
    resolve_queue,
    run,
    set_debug,
)

cli = Cli(name="tidings")
dlq_cli = Cli(help="Dead-letter queue: list, replay, purge.")
delayed_cli = Cli(help="Delayed messages: cancel, reschedule.")
queue_cli = Cli(help="One queue: delete it.")
server_cli = Cli(help="The embedded server of this directory.")
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(delayed_cli, name="delayed")
cli.add_typer(queue_cli, name="queue")
cli.add_typer(server_cli, name="server")

QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="A queue name.")]
MessageArg = Annotated[str, typer.Argument(metavar="MESSAGE_ID", help="A message id.")]
Reason = Annotated[str | None, typer.Option(help="Only dead letters with this reason.")]
ErrorType = Annotated[str | None, typer.Option(
    help="Only dead letters whose error is of this type (e.g. TimeoutError).")]


@cli.callback()
def root(debug: Annotated[bool, typer.Option(
        "--debug", envvar="TIDINGS_DEBUG",
        help="On an error, show its traceback instead of one line.")] = False) -> None:
    """tidings: a reliable, fast message queue on Redis Streams.

    Exit codes: 0 done, 1 not found or nothing done, 2 usage error, 3 server unavailable,
    4 permission refused, 5 internal error.
    """
    set_debug(debug)


@cli.command()
def worker(
    app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP",
                                            help="Your app, e.g. myapp:app.")],
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queue names (default: every queue with a handler).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Messages in flight in this process, all queues.")] = None,
    grace: Annotated[float | None, typer.Option(
        min=0, callback=finite, help="Seconds to finish in-flight work on SIGTERM.")] = None,
    summary_every: Annotated[float, typer.Option(
        min=0, callback=finite,
        help="Seconds between INFO activity lines (processed, failed, in flight); 0: "
             "none.")] = 5.0,
    metrics_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Serve /metrics, /livez, /readyz and /stats on this port "
                               "(default: TIDINGS_METRICS_PORT; unset: off).")] = None,
) -> None:
    """Run a worker process for the app's handlers until SIGTERM or SIGINT."""
    from ..observability.activity import install_activity_log
    from ..observability.logs import JsonLogMiddleware, LogContext, configure_logging
    from ..scheduling.campaigns import Campaigns

    app = load_app(app_spec, hint="MODULE:APP")
    names = [n.strip() for n in queues.split(",") if n.strip()] if queues else None
    for name in names or ():
        if name not in app.queues:
            from .support import suggest

            raise CommandFailed(f"{app_spec} declares no queue {name!r}"
                                f"{suggest(name, set(app.queues))}", EXIT_NOTHING)
    configure_logging(app.settings.log_level, app.settings.log_json)
    app.add_middleware(JsonLogMiddleware())
    app.add_middleware(LogContext())
    if metrics_port is not None:
        app.settings.metrics_port = metrics_port
    app.observability.install_from_settings()
    if app.settings.ledger.database_url is not None:
        app.ledger.install()  # the ledger, the outbox relay and retention, as configured
    if summary_every:
        install_activity_log(app, summary_every)
    _ = app.schedules  # every worker runs the schedule ticker: no single instance to mind
    Campaigns.of(app)  # and tallies campaign outcomes
    w = app.worker(names, concurrency=concurrency, shutdown_grace=grace,
                   install_signal_handlers=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    # What start-up created (modules, the app) lives as long as the process: out of the
    # collector's sight, a full collection walks only what the work allocates (a shorter
    # pause, less tail latency).
    gc.collect()
    gc.freeze()
    run(app, w.run)


@cli.command()
def publish(
    queue: QueueArg,
    payload: Annotated[str, typer.Argument(
        metavar="PAYLOAD", help="JSON; '-' reads it from stdin, '@FILE' from a file.")],
    priority: Annotated[str, typer.Option(help="high, normal or low.")] = "normal",
    idempotency_key: Annotated[str | None, typer.Option(
        help="A second publish with this key within the dedupe window enqueues nothing.")
    ] = None,
    delay: Annotated[float | None, typer.Option(
        min=0, callback=finite, help="Seconds to wait before delivery.")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Travels in the headers.")] = None,
    app_spec: AppOption = None,
) -> None:
    """Publish one message to a known queue and print its id."""
    body = read_payload(payload)
    app = load_app(app_spec)

    async def send() -> str:
        q = await resolve_queue(app, queue)
        return await q.publish(body, priority=priority, idempotency_key=idempotency_key,
                               delay=delay, correlation_id=correlation_id)

    typer.echo(run(app, send))


@cli.command()
def queues(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Depth per lane, in flight, delayed, dead letters and oldest age of every queue."""
    app = load_app(app_spec)

    async def body() -> list[Any]:
        names = await app.queue_names()
        return [await (await resolve_queue(app, name)).stats() for name in names]

    stats = run(app, body)
    if json:
        emit_json([{**dataclasses.asdict(s), "depth": s.depth} for s in stats])
        return
    rows = []
    for s in stats:
        acked = sum(v for k, v in s.counters.items() if k.startswith("acked"))
        age = "-" if s.oldest_age is None else f"{s.oldest_age:.1f}s"
        rows.append([s.name, *(s.lanes[n] for n in ("high", "normal", "low")), s.in_flight,
                     s.delayed, s.dead, age, s.consumers, acked])
    show_table(console, ["queue", "high", "normal", "low", "in flight", "delayed", "dlq",
                         "oldest", "consumers", "acked"], rows, ids=["queue"])


@cli.command()
def inspect(message_id: MessageArg,
            queue: Annotated[str | None, typer.Option(
                help="Look only in this queue (default: every queue).")] = None,
            app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Where a message is (queued, in flight, delayed, dead) and what it holds."""
    app = load_app(app_spec)

    async def body() -> dict[str, Any] | None:
        names = [queue] if queue is not None else await app.queue_names()
        for name in names:
            view = await view_of(await resolve_queue(app, name), message_id)
            if view is not None:
                return view
        return None

    view = run(app, body)
    if view is None:
        where = f"queue {queue!r}" if queue else "any queue"
        raise CommandFailed(f"no message {message_id!r} in {where}")
    if json:
        emit_json(view)
    else:
        show_record(console, as_text(view))


def _filter(reason: str | None, error_type: str | None) -> Any:
    return make_filter(reason=reason, error_type=error_type)


@dlq_cli.command("list")
def dlq_list(queue: QueueArg,
             limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
             reason: Reason = None, error_type: ErrorType = None,
             app_spec: AppOption = None, json: JsonOption = False) -> None:
    """List dead letters with reason, error and attempts, oldest first."""
    app = load_app(app_spec)

    async def body() -> list[dict[str, Any]]:
        q = await resolve_queue(app, queue)
        return [dead_letter_view(item, q.name)
                for item in await q.dlq.list(limit, _filter(reason, error_type))]

    views = run(app, body)
    if json:
        emit_json(views)
        return
    rows = []
    for view in views:
        text = as_text(view)
        rows.append([view["id"] or f"entry {view['entry_id']}", view["reason"],
                     (view["decode_error"] or text.get("error") or "")[:200], view["attempts"],
                     view["deliveries"], (view["dead_at"] or "")[:19].replace("T", " "),
                     view["priority"]])
    show_table(console, ["message id", "reason", "error", "attempts", "deliveries",
                         "dead at", "priority"], rows, ids=["message id"],
               text=["reason", "error"])


Ids = Annotated[list[str] | None, typer.Option("--id", metavar="MESSAGE_ID",
                                               help="This message (repeat for more).")]
All = Annotated[bool, typer.Option("--all", help="Every dead letter of the queue.")]


def _selection(message_id: list[str] | None, all_: bool, reason: str | None,
               error_type: str | None) -> None:
    if not (message_id or all_ or reason or error_type):
        raise typer.BadParameter("give --id, --reason, --error-type or --all")


@dlq_cli.command("replay")
def dlq_replay(queue: QueueArg, message_id: Ids = None, all_: All = False,
               reason: Reason = None, error_type: ErrorType = None,
               rate: Annotated[float | None, typer.Option(
                   callback=positive, help="Messages per second at most.")] = None,
               app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Replay dead letters (by --id, --reason, --error-type, or --all) with fresh attempts."""
    _selection(message_id, all_, reason, error_type)
    app = load_app(app_spec)

    async def body() -> DeadLetterCount:
        async with on_queue(app, queue, "dlq:replay", "dlq.replay") as q:
            with progress(f"replaying dead letters of {queue}", console, quiet=json) as report:
                return await q.dlq.replay(message_id or None, where=_filter(reason, error_type),
                                          rate=rate, progress=report)

    done = run(app, body)
    print_count("replayed", done, json, skipped=[dataclasses.asdict(s) for s in done.skipped])


@dlq_cli.command("purge")
def dlq_purge(queue: QueueArg, message_id: Ids = None, all_: All = False,
              reason: Reason = None, error_type: ErrorType = None,
              yes: YesOption = False, app_spec: AppOption = None,
              json: JsonOption = False) -> None:
    """Delete dead letters for good."""
    _selection(message_id, all_, reason, error_type)
    app = load_app(app_spec)

    async def body() -> int:
        async with on_queue(app, queue, "dlq:purge", "dlq.purge") as q:
            if not yes:
                typer.confirm(f"purge dead letters of {queue}?", abort=True)
            with progress(f"purging dead letters of {queue}", console, quiet=json) as report:
                return await q.dlq.purge(message_id or None, where=_filter(reason, error_type),
                                         progress=report)

    print_count("purged", run(app, body), json)


@delayed_cli.command("cancel")
def delayed_cancel(queue: QueueArg, message_id: MessageArg, app_spec: AppOption = None) -> None:
    """Cancel a delayed message."""
    app = load_app(app_spec)

    async def body() -> bool:
        async with on_queue(app, queue, "queue:delayed", "delayed.cancel",
                            message=message_id) as q:
            return await q.cancel(message_id)

    if not run(app, body):
        raise CommandFailed(f"{message_id} is not waiting in {queue}'s delayed set")
    typer.echo("cancelled")


@delayed_cli.command("reschedule")
def delayed_reschedule(queue: QueueArg, message_id: MessageArg,
                       delay: Annotated[float, typer.Option(
                           min=0, callback=finite, help="Seconds from now.")],
                       app_spec: AppOption = None) -> None:
    """Move a delayed message's due time to now + DELAY seconds."""
    app = load_app(app_spec)

    async def body() -> datetime:
        async with on_queue(app, queue, "queue:delayed", "delayed.reschedule",
                            message=message_id) as q:
            return await q.reschedule(message_id, delay=delay)

    typer.echo(run(app, body).astimezone(UTC).isoformat())


@queue_cli.command("delete")
def queue_delete(name: QueueArg,
                 force: Annotated[bool, typer.Option(
                     "--force", help="Delete it even if it holds messages or has workers.")
                 ] = False,
                 yes: YesOption = False, app_spec: AppOption = None,
                 json: JsonOption = False) -> None:
    """Delete a queue: its messages, dead letters, settings and counters."""
    app = load_app(app_spec)

    async def body() -> int:
        async with on_queue(app, name, "queue:delete", "queue.delete") as q:
            if not yes:
                s = await q.stats()
                typer.confirm(f"delete queue {name} ({s.depth + s.in_flight} queued or in flight, "
                              f"{s.delayed} delayed, {s.dead} dead letters) for good?", abort=True)
            with progress(f"deleting {name}", console, quiet=json) as report:
                try:
                    return await q.delete(force=force, progress=report)
                except QueueNotEmptyError as exc:
                    raise CommandFailed(f"{exc} (add --force to delete it anyway)") from None

    keys = run(app, body)
    if json:
        emit_json({"deleted": name, "keys": keys})
    else:
        typer.echo(f"deleted {name} ({keys} keys)")


@server_cli.command("status")
def server_status(json: JsonOption = False) -> None:
    """Show the embedded server of this directory."""
    from ..core.settings import load_settings
    from ..engine.embedded import server_status as status

    data = status(load_settings().data_dir.resolve())
    if json:
        emit_json(data)
    else:
        show_record(console, data)


@server_cli.command("stop")
def server_stop() -> None:
    """Stop the embedded server of this directory (its data stays in the AOF)."""
    from ..core.settings import load_settings
    from ..engine.embedded import stop_server

    if not stop_server(load_settings().data_dir.resolve()):
        raise CommandFailed("no embedded server is running for this directory")
    typer.echo("stopped")


@cli.command()
def demo(messages: Annotated[int, typer.Option(min=1, help="How many messages.")] = 3000,
         ledger: Annotated[bool, typer.Option(
             "--ledger", help="Record it in the ledger (the embedded PostgreSQL unless "
                              "TIDINGS_DATABASE_URL is set) and show a message's trace.")
         ] = False,
         json: JsonOption = False) -> None:
    """Run the demo: embedded server, worker, a realistic mix, live progress, summary."""
    from ..demo import run_demo

    summary = asyncio.run(run_demo(messages, console, quiet=json, ledger=ledger))
    if json:
        emit_json(summary)


# Flow control (tidings.cli_flow): top-level `breakers`, `pause`, `resume`, `paused`.
from .flow import flow_cli  # noqa: E402

cli.add_typer(flow_cli)
from .ordered import ordered_cli  # noqa: E402

cli.add_typer(ordered_cli, name="ordered")

from .schedules import campaigns_cli, schedules_cli  # noqa: E402

cli.add_typer(schedules_cli, name="schedules")
cli.add_typer(campaigns_cli, name="campaigns")


from .observe import alerts_cli, observe_cli  # noqa: E402

cli.add_typer(observe_cli)
cli.add_typer(alerts_cli, name="alerts")
from .ledger import ledger_cli  # noqa: E402 - db, trace, outbox, audit, erase, archive

cli.add_typer(ledger_cli)

from .routes import routes_cli  # noqa: E402

cli.add_typer(routes_cli, name="routes")
from .security import acl_cli, keys_cli, tokens_cli  # noqa: E402

cli.add_typer(acl_cli, name="acl")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(tokens_cli, name="tokens")
from .webhooks import webhooks_cli  # noqa: E402

cli.add_typer(webhooks_cli, name="webhooks")
from .bridge import bridge_cli; cli.add_typer(bridge_cli, name="bridge")  # noqa: E402, E702, I001
from .api import api_cli  # noqa: E402 - `tidings api`: the HTTP API

cli.add_typer(api_cli)
from .ha import ha_cli  # noqa: E402
from .runtime import ratelimit, retry, weights  # noqa: E402

cli.add_typer(ha_cli, name="ha")
cli.command()(weights)
cli.command()(retry)
cli.command()(ratelimit)


def main() -> None:
    """The console script (and ``python -m tidings``)."""
    cli()


__all__ = ["Priority", "cli", "main"]
