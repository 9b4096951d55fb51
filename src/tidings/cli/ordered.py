"""``tidings ordered ...``: run, inspect and unblock ordered queues.

The app module (``--app`` / ``MODULE:APP``) declares the ordered queues
(:class:`~tidings.ordering.OrderedQueue`); a queue it does not declare is looked up by
name with the partition count stored in Redis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from ..app import Tidings
from ..ordering.queue import OrderedQueue, ordered_queues, stored_ordered_names
from .authz import authorized
from .output import progress, show_table
from .support import (
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    YesOption,
    console,
    emit_json,
    finite,
    load_app,
    print_count,
    run,
    suggest,
)

ordered_cli = Cli(help="Ordered queues: per-key order over partitions.")
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="An ordered queue's name.")]
KeyArg = Annotated[str, typer.Argument(metavar="KEY", help="An ordering key.")]


async def _queue(app: Tidings, name: str) -> OrderedQueue:
    declared = ordered_queues(app).get(name)
    if declared is not None:
        return declared
    stored = await app.broker.client.hget(app.key_space.ordered(name).meta,
                                          "partitions")
    if stored is None:
        known = await stored_ordered_names(app)
        raise CommandFailed(f"no ordered queue {name!r}{suggest(name, known)}; known: "
                            f"{', '.join(sorted(known)) or 'none'}")
    return OrderedQueue(app, name, partitions=int(stored))


@ordered_cli.command("worker")
def worker(app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP",
                                                   help="Your app, e.g. myapp:app.")],
           grace: Annotated[float | None, typer.Option(
               min=0, callback=finite, help="Seconds to finish in-flight work on SIGTERM.")
           ] = None) -> None:
    """Run the app's ordered queues (only) until SIGTERM/SIGINT."""
    from ..observability.logs import configure_logging
    from ..ordering.worker import OrderedWorker

    app = load_app(app_spec, hint="MODULE:APP")
    configure_logging(app.settings.log_level, app.settings.log_json)
    queues = [q for q in ordered_queues(app).values() if q.handler_spec is not None]
    if not queues:
        raise typer.BadParameter("the app declares no ordered queue with a handler",
                                 param_hint="MODULE:APP")
    w = OrderedWorker(app, queues, shutdown_grace=grace, install_signal_handlers=True)
    run(app, w.run)


@ordered_cli.command("status")
def status(name: NameArg, app_spec: AppOption = None, json: JsonOption = False) -> None:
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
def blocked(name: NameArg, app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Keys whose head failed: retrying, or held for an operator."""
    app = load_app(app_spec)

    async def body() -> Any:
        return await (await _queue(app, name)).blocked_keys()

    keys = run(app, body)
    if json:
        emit_json([dataclasses.asdict(k) for k in keys])
        return
    show_table(console, ["key", "partition", "state", "message", "attempts", "waiting", "error"],
               [[k.key, k.partition, k.state, k.message_id, k.attempts, k.waiting, k.error[:200]]
                for k in keys], ids=["key", "message"], text=["error"])


def _unblock(app_spec: str | None, name: str, key: str, verb: str,
             call: Callable[[OrderedQueue, str], Awaitable[bool]]) -> None:
    """``call(queue, key)`` on a blocked key as an audited ``ordered:write`` operation;
    a key that is not blocked is a failed operation (exit 1)."""
    app = load_app(app_spec)

    async def body() -> None:
        q = await _queue(app, name)
        async with authorized(app, f"ordered:write:{name}", f"ordered.{verb}", name, key=key):
            if not await call(q, key):
                raise CommandFailed(f"key {key!r} of {name} is not blocked")

    run(app, body)


@ordered_cli.command("retry")
def retry(name: NameArg, key: KeyArg, app_spec: AppOption = None) -> None:
    """Run a blocked key's head again now, with fresh attempts."""
    _unblock(app_spec, name, key, "retry", OrderedQueue.retry_key)
    typer.echo(f"retrying {key}")


@ordered_cli.command("skip")
def skip(name: NameArg, key: KeyArg, app_spec: AppOption = None) -> None:
    """Dead-letter a blocked key's head; the key goes on with its next message."""
    _unblock(app_spec, name, key, "skip", OrderedQueue.skip_key)
    typer.echo(f"skipped the head of {key}")


KeyFilter = Annotated[str | None, typer.Option("--key", help="Only this key's dead letters")]


@ordered_cli.command("dlq")
def dlq(name: NameArg, limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
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
    show_table(console, ["key", "message", "reason", "attempts", "error"],
               [[r["key"], r["id"], r["reason"], r["attempts"], r["error"][:200]] for r in rows],
               ids=["key", "message"], text=["reason", "error"])


@ordered_cli.command("replay")
def replay(name: NameArg, key: KeyFilter = None, app_spec: AppOption = None,
           json: JsonOption = False) -> None:
    """Put dead letters back at the end of their keys' lines, with fresh attempts."""
    app = load_app(app_spec)

    async def body() -> int:
        q = await _queue(app, name)
        async with authorized(app, f"dlq:replay:{name}", "ordered.replay", name,
                              key=key) as operation:
            with progress(f"replaying dead letters of {name}", console, quiet=json) as report:
                operation.detail["count"] = count = await q.replay_dead_letters(
                    key, progress=report)
        return count

    print_count("replayed", run(app, body), json)


@ordered_cli.command("purge")
def purge(name: NameArg, key: KeyFilter = None, app_spec: AppOption = None,
          yes: YesOption = False, json: JsonOption = False) -> None:
    """Delete dead letters for good."""
    app = load_app(app_spec)

    async def body() -> int:
        q = await _queue(app, name)
        if not yes:
            typer.confirm(f"purge dead letters of ordered queue {name}?", abort=True)
        async with authorized(app, f"dlq:purge:{name}", "ordered.purge", name,
                              key=key) as operation:
            with progress(f"purging dead letters of {name}", console, quiet=json) as report:
                operation.detail["count"] = count = await q.purge_dead_letters(
                    key, progress=report)
        return count

    print_count("purged", run(app, body), json)

