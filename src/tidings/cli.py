"""The ``tidings`` command: run workers, publish, and see and control queues."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from .app import Tidings
from .core.errors import TidingsError
from .core.message import Priority
from .queues.dead_letters import make_filter

T = TypeVar("T")
cli = typer.Typer(help="tidings: a reliable, fast message queue on Redis Streams.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
dlq_cli = typer.Typer(help="Dead-letter queue: list, replay, purge.", no_args_is_help=True)
delayed_cli = typer.Typer(help="Delayed messages: cancel, reschedule.", no_args_is_help=True)
server_cli = typer.Typer(help="The embedded server.", no_args_is_help=True)
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(delayed_cli, name="delayed")
cli.add_typer(server_cli, name="server")
console = Console()

AppOption = Annotated[str | None, typer.Option(
    "--app", envvar="TIDINGS_APP", help="module:attribute of your Tidings app (queue configs).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load_app(spec: str | None) -> Tidings:
    """Import ``module:attr``; without one, a plain app with default queue settings."""
    if not spec:
        return Tidings()
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        app = getattr(module, attr or "app")
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {spec!r}: {exc}", param_hint="--app") from None
    if not isinstance(app, Tidings):
        raise typer.BadParameter(f"{spec!r} is not a Tidings app", param_hint="--app")
    return app


def run(app: Tidings, body: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        async with app:
            return await body()

    try:
        return asyncio.run(main())
    except TidingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def queue_of(app: Tidings, name: str) -> Any:
    return app.queues.get(name) or app.queue(name)


@cli.command()
def worker(
    app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP")],
    queues: Annotated[str | None, typer.Option(help="Comma-separated (default: all)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Messages in flight per worker")] = None,
    grace: Annotated[float | None, typer.Option(help="Shutdown grace seconds")] = None,
) -> None:
    """Run a worker process for the app's handlers until SIGTERM/SIGINT."""
    from .observability.logs import JsonLogMiddleware, configure_logging
    from .scheduling.campaigns import Campaigns

    app = load_app(app_spec)
    configure_logging(app.settings.log_level, app.settings.log_json)
    app.add_middleware(JsonLogMiddleware())
    _ = app.schedules  # every worker runs the schedule ticker: no single instance to mind
    Campaigns.of(app)  # and tallies campaign outcomes
    names = queues.split(",") if queues else None
    w = app.worker(names, concurrency=concurrency, shutdown_grace=grace,
                   install_signal_handlers=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    run(app, w.run)


@cli.command()
def publish(
    queue: str,
    payload: Annotated[str, typer.Argument(help="JSON payload")],
    priority: str = "normal",
    idempotency_key: str | None = None,
    delay: Annotated[float | None, typer.Option(help="Seconds to delay")] = None,
    correlation_id: str | None = None,
    app_spec: AppOption = None,
) -> None:
    """Publish one message and print its id."""
    app = load_app(app_spec)
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from None
    q = queue_of(app, queue)
    msg_id = run(app, lambda: q.publish(body, priority=priority, idempotency_key=idempotency_key,
                                        delay=delay, correlation_id=correlation_id))
    typer.echo(msg_id)


@cli.command()
def queues(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Depth per lane, in flight, delayed, DLQ and oldest message age of every queue."""
    app = load_app(app_spec)

    async def body() -> list[Any]:
        names = sorted(set(await app.broker.queue_names()) | set(app.queues))
        return [await queue_of(app, name).stats() for name in names]

    stats = run(app, body)
    if json:
        emit_json([{**dataclasses.asdict(s), "depth": s.depth} for s in stats])
        return
    table = Table("queue", "high", "normal", "low", "in flight", "delayed", "dlq",
                  "oldest", "consumers", "acked")
    for s in stats:
        acked = sum(v for k, v in s.counters.items() if k.startswith("acked"))
        age = "-" if s.oldest_age is None else f"{s.oldest_age:.1f}s"
        table.add_row(s.name, *(str(s.lanes[n]) for n in ("high", "normal", "low")),
                      str(s.in_flight), str(s.delayed), str(s.dead), age, str(s.consumers),
                      str(acked))
    console.print(table)


@cli.command()
def inspect(message_id: str, queue: str | None = None, app_spec: AppOption = None,
            json: JsonOption = False) -> None:
    """Where a message is (queued, in flight, delayed, dead) and what it holds."""
    app = load_app(app_spec)

    async def body() -> Any:
        names = [queue] if queue else await app.broker.queue_names()
        for name in names:
            info = await queue_of(app, name).inspect(message_id)
            if info is not None:
                return info
        return None

    info = run(app, body)
    if info is None:
        console.print(f"[red]no message {message_id}[/red]")
        raise typer.Exit(1)
    m = info.message
    data = {
        "id": info.id, "queue": m.queue if m else None, "state": info.state,
        "priority": info.lane, "deliveries": info.deliveries,
        "due_at": info.due_at.isoformat() if info.due_at else None,
        "attempts": m.attempts if m else None,
        "created_at": m.created_at.isoformat() if m else None,
        "expires_at": m.expires_at.isoformat() if m and m.expires_at else None,
        "headers": m.headers if m else None, "payload": m.payload if m else None,
        "dead_letter": info.dead_letter,
    }
    if json:
        emit_json(data)
    else:
        for key, value in data.items():
            if value is not None:
                console.print(f"[bold]{key}[/bold]: {value}")


def _filter(reason: str | None, error_type: str | None) -> Any:
    return make_filter(reason=reason, error_type=error_type)


@dlq_cli.command("list")
def dlq_list(queue: str, limit: int = 50, reason: str | None = None,
             error_type: str | None = None, app_spec: AppOption = None,
             json: JsonOption = False) -> None:
    """List dead letters with reason, error and attempts."""
    app = load_app(app_spec)
    q = queue_of(app, queue)
    items = run(app, lambda: q.dlq.list(limit, _filter(reason, error_type)))
    if json:
        emit_json([item.as_dict() for item in items])
        return
    table = Table("message id", "reason", "error", "attempts", "dead at", "priority")
    for item in items:
        error = f"{item.error.get('type', '')}: {item.error.get('message', '')}".strip(": ")
        table.add_row(item.message_id, item.reason, error[:60],
                      str(item.error.get("attempts", "")),
                      item.dead_at.strftime("%Y-%m-%d %H:%M:%S") if item.dead_at else "",
                      item.lane.label)
    console.print(table)


@dlq_cli.command("replay")
def dlq_replay(queue: str,
               message_id: Annotated[list[str] | None, typer.Option("--id")] = None,
               all_: Annotated[bool, typer.Option("--all")] = False,
               reason: str | None = None, error_type: str | None = None,
               rate: Annotated[float | None, typer.Option(help="Max messages per second")] = None,
               app_spec: AppOption = None) -> None:
    """Replay dead letters (by --id, by --reason/--error-type, or --all) with fresh attempts."""
    if not (message_id or all_ or reason or error_type):
        raise typer.BadParameter("give --id, --reason, --error-type or --all")
    app = load_app(app_spec)
    q = queue_of(app, queue)
    n = run(app, lambda: q.dlq.replay(message_id or None, where=_filter(reason, error_type),
                                      rate=rate))
    typer.echo(f"replayed {n}")


@dlq_cli.command("purge")
def dlq_purge(queue: str,
              message_id: Annotated[list[str] | None, typer.Option("--id")] = None,
              all_: Annotated[bool, typer.Option("--all")] = False,
              reason: str | None = None, error_type: str | None = None,
              yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
              app_spec: AppOption = None) -> None:
    """Delete dead letters for good."""
    if not (message_id or all_ or reason or error_type):
        raise typer.BadParameter("give --id, --reason, --error-type or --all")
    if not yes:
        typer.confirm(f"purge dead letters of {queue}?", abort=True)
    app = load_app(app_spec)
    q = queue_of(app, queue)
    n = run(app, lambda: q.dlq.purge(message_id or None, where=_filter(reason, error_type)))
    typer.echo(f"purged {n}")


@delayed_cli.command("cancel")
def delayed_cancel(queue: str, message_id: str, app_spec: AppOption = None) -> None:
    """Cancel a delayed message."""
    app = load_app(app_spec)
    q = queue_of(app, queue)
    if not run(app, lambda: q.cancel(message_id)):
        console.print(f"[red]{message_id} is not waiting in {queue}'s delayed set[/red]")
        raise typer.Exit(1)
    typer.echo("cancelled")


@delayed_cli.command("reschedule")
def delayed_reschedule(queue: str, message_id: str,
                       delay: Annotated[float, typer.Option(help="Seconds from now")],
                       app_spec: AppOption = None) -> None:
    """Move a delayed message's due time to now + DELAY seconds."""
    app = load_app(app_spec)
    q = queue_of(app, queue)
    due: datetime = run(app, lambda: q.reschedule(message_id, delay=delay))
    typer.echo(due.astimezone(UTC).isoformat())


@cli.command()
def weights(queue: str, high: int, normal: int, low: int, app_spec: AppOption = None) -> None:
    """Change a queue's lane weights on every running worker, without a restart."""
    app = load_app(app_spec)
    q = queue_of(app, queue)
    run(app, lambda: q.set_weights(high, normal, low))
    typer.echo(f"{queue}: weights high={high} normal={normal} low={low}")


@server_cli.command("status")
def server_status(json: JsonOption = False) -> None:
    """Show the embedded server of this directory."""
    from .core.settings import load_settings
    from .engine.embedded import server_status as status

    data = status(load_settings().data_dir.resolve())
    if json:
        emit_json(data)
    else:
        for key, value in data.items():
            console.print(f"[bold]{key}[/bold]: {value}")


@server_cli.command("stop")
def server_stop() -> None:
    """Stop the embedded server of this directory (its data stays in the AOF)."""
    from .core.settings import load_settings
    from .engine.embedded import stop_server

    typer.echo("stopped" if stop_server(load_settings().data_dir.resolve()) else "not running")


@cli.command()
def demo(messages: Annotated[int, typer.Option(help="How many messages")] = 3000,
         json: JsonOption = False) -> None:
    """Run the demo: embedded server, worker, a realistic mix, live progress, summary."""
    from .demo import run_demo

    summary = asyncio.run(run_demo(messages, console, quiet=json))
    if json:
        emit_json(summary)


# Flow control (tidings.cli_flow): top-level `breakers`, `pause`, `resume`, `paused`.
from .cli_flow import flow_cli  # noqa: E402

cli.add_typer(flow_cli)
from .cli_ordered import ordered_cli  # noqa: E402

cli.add_typer(ordered_cli, name="ordered")

from .cli_schedule import campaigns_cli, schedules_cli  # noqa: E402 - needs cli's helpers

cli.add_typer(schedules_cli, name="schedules")
cli.add_typer(campaigns_cli, name="campaigns")


def main() -> None:
    try:
        cli()
    except TidingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


__all__ = ["Priority", "cli", "main"]
