"""``tidings ordered ...``: run, inspect and unblock ordered queues.

The app module (``--app`` / ``MODULE:APP``) declares the ordered queues
(:class:`~tidings.ordering.OrderedQueue`); a queue it does not declare is looked up by
name with the partition count stored in Redis.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from .app import Tidings
from .cli import AppOption, JsonOption, console, emit_json, load_app, run
from .ordering.queue import OrderedQueue, meta_key, ordered_queues

ordered_cli = typer.Typer(help="Ordered queues: per-key order over partitions.",
                          no_args_is_help=True)


async def _queue(app: Tidings, name: str) -> OrderedQueue:
    declared = ordered_queues(app).get(name)
    if declared is not None:
        return declared
    stored = await app.broker.client.hget(meta_key(app.settings.key_prefix, name),
                                          "partitions")
    if stored is None:
        raise typer.BadParameter(f"no ordered queue {name!r}", param_hint="NAME")
    return OrderedQueue(app, name, partitions=int(stored))


@ordered_cli.command("worker")
def worker(app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP")],
           grace: Annotated[float | None, typer.Option(help="Shutdown grace seconds")] = None
           ) -> None:
    """Run the app's ordered queues (only) until SIGTERM/SIGINT."""
    from .observability.logs import configure_logging
    from .ordering.assignment import OrderedWorker

    app = load_app(app_spec)
    configure_logging(app.settings.log_level, app.settings.log_json)
    queues = [q for q in ordered_queues(app).values() if q.handler_spec is not None]
    if not queues:
        raise typer.BadParameter("the app declares no ordered queue with a handler")
    w = OrderedWorker(app, queues, shutdown_grace=grace, install_signal_handlers=True)
    run(app, w.run)


@ordered_cli.command("status")
def status(name: str, app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Partitions and their owners, keys ready / running / waiting / blocked, counters."""
    app = load_app(app_spec)

    async def body() -> Any:
        return await (await _queue(app, name)).stats()

    stats = run(app, body)
    if json:
        data = dataclasses.asdict(stats)
        data["owners"] = {str(p): w for p, w in stats.owners.items()}  # JSON keys are text
        emit_json(data)
        return
    owners = sorted(set(stats.owners.values()) - {""})
    console.print(f"[bold]{name}[/bold]: {stats.partitions} partitions, "
                  f"{len(owners)} workers; keys ready {stats.ready}, running {stats.active}, "
                  f"waiting {stats.waiting}, blocked {stats.blocked}; dead {stats.dead}")
    unowned = [p for p, w in stats.owners.items() if not w]
    if unowned:
        console.print(f"[yellow]unowned partitions: {unowned}[/yellow]")


@ordered_cli.command("blocked")
def blocked(name: str, app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Keys whose head failed: retrying, or held for an operator."""
    app = load_app(app_spec)

    async def body() -> Any:
        return await (await _queue(app, name)).blocked_keys()

    keys = run(app, body)
    if json:
        emit_json([dataclasses.asdict(k) for k in keys])
        return
    table = Table("key", "partition", "state", "message", "attempts", "waiting", "error")
    for k in keys:
        table.add_row(k.key, str(k.partition), k.state, k.message_id, str(k.attempts),
                      str(k.waiting), k.error[:60])
    console.print(table)


@ordered_cli.command("retry")
def retry(name: str, key: str, app_spec: AppOption = None) -> None:
    """Run a blocked key's head again now, with fresh attempts."""
    app = load_app(app_spec)

    async def body() -> bool:
        return await (await _queue(app, name)).retry_key(key)

    if not run(app, body):
        console.print(f"[red]{key} is not blocked[/red]")
        raise typer.Exit(1)
    typer.echo(f"retrying {key}")


@ordered_cli.command("skip")
def skip(name: str, key: str, app_spec: AppOption = None) -> None:
    """Dead-letter a blocked key's head; the key goes on with its next message."""
    app = load_app(app_spec)

    async def body() -> bool:
        return await (await _queue(app, name)).skip_key(key)

    if not run(app, body):
        console.print(f"[red]{key} is not blocked[/red]")
        raise typer.Exit(1)
    typer.echo(f"skipped the head of {key}")


KeyFilter = Annotated[str | None, typer.Option("--key", help="Only this key's dead letters")]


@ordered_cli.command("dlq")
def dlq(name: str, limit: Annotated[int, typer.Option(help="At most this many")] = 100,
        app_spec: AppOption = None, json: JsonOption = False) -> None:
    """List dead-lettered messages: key, id, reason, error."""
    app = load_app(app_spec)

    async def body() -> list[dict[str, Any]]:
        return await (await _queue(app, name)).dead_letters(limit)

    rows = [{"key": d["key"], "id": d["message"].id, "partition": d["partition"],
             "reason": d["reason"], "error": d["error"], "dead_at": d["dead_at"],
             "attempts": d["message"].attempts} for d in run(app, body)]
    if json:
        emit_json(rows)
        return
    table = Table("key", "message", "reason", "attempts", "error")
    for row in rows:
        table.add_row(row["key"], row["id"], row["reason"], str(row["attempts"]),
                      row["error"][:80])
    console.print(table)


@ordered_cli.command("replay")
def replay(name: str, key: KeyFilter = None, app_spec: AppOption = None) -> None:
    """Put dead letters back at the end of their keys' lines, with fresh attempts."""
    app = load_app(app_spec)

    async def body() -> int:
        return await (await _queue(app, name)).replay_dead_letters(key)

    typer.echo(f"replayed {run(app, body)} messages")


@ordered_cli.command("purge")
def purge(name: str, key: KeyFilter = None, app_spec: AppOption = None,
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False) -> None:
    """Delete dead letters for good."""
    if not yes:
        typer.confirm(f"purge dead letters of ordered queue {name}?", abort=True)
    app = load_app(app_spec)

    async def body() -> int:
        return await (await _queue(app, name)).purge_dead_letters(key)

    typer.echo(f"purged {run(app, body)} messages")
