"""Flow-control commands: ``tidings breakers``, ``tidings pause``, ``tidings resume``.

Registered on the main command in :mod:`tidings.cli`. ``--app`` gives the commands the
breakers and queues the workers declare; without it they use what the workers registered
in Redis (breakers) and default queue settings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from .cli import AppOption, JsonOption, console, emit_json, load_app, queue_of, run
from .core.errors import ValidationError
from .ordering.queue import meta_key

flow_cli = typer.Typer(help="Flow control: circuit breakers, pausing queues and keys.")

KeyOption = Annotated[str | None, typer.Option("--key", help="Only this key of the queue.")]


def _when(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


@flow_cli.command()
def breakers(
    app_spec: AppOption = None,
    json: JsonOption = False,
    reset: Annotated[str | None, typer.Option(
        "--reset", metavar="NAME", help="Force this breaker closed first.")] = None,
) -> None:
    """Circuit breakers shared by the workers: state, failures in the window, queues."""
    app = load_app(app_spec)

    async def body() -> dict[str, Any]:
        if reset is not None:
            await app.flow.breaker(reset).reset()
        return await app.flow.breaker_states()

    states = run(app, body)
    rows = [{"name": name, "state": s.state.value, "failures": s.failures, "calls": s.calls,
             "opened_at": _when(s.opened_at), "next_probe_at": _when(s.next_probe_at),
             "probes_in_flight": s.probes_in_flight, "queues": config.get("queues", []),
             "config": config}
            for name, (s, config) in states.items()]
    if json:
        emit_json(rows)
        return
    table = Table("breaker", "state", "failures/calls", "opened at", "next probe", "queues")
    for row in rows:
        color = {"open": "red", "half_open": "yellow"}.get(row["state"], "green")
        table.add_row(row["name"], f"[{color}]{row['state']}[/{color}]",
                      f"{row['failures']}/{row['calls']}", row["opened_at"] or "-",
                      row["next_probe_at"] or "-", ", ".join(row["queues"]))
    console.print(table)


@flow_cli.command()
def pause(queue: str, key: KeyOption = None, app_spec: AppOption = None) -> None:
    """Stop every worker from taking QUEUE's messages (or one key's); they stay queued."""
    app = load_app(app_spec)
    q = queue_of(app, queue)

    async def pause_it() -> None:
        # A pause is a flag only plain-queue workers read: refuse rather than "succeed".
        if await app.broker.client.exists(meta_key(app.settings.key_prefix, queue)):
            raise ValidationError("queue", f"{queue!r} is an ordered queue; pause does not "
                                  "apply to ordered queues")
        await app.flow.pause(q, key)

    run(app, pause_it)
    typer.echo(f"paused {queue}" + (f" key {key}" if key is not None else ""))
    if key is not None:
        typer.echo(f"note: only workers whose app declares app.flow.pausable({queue!r}, "
                   "key=...) hold back a paused key", err=True)


@flow_cli.command()
def resume(queue: str, key: KeyOption = None, app_spec: AppOption = None) -> None:
    """Undo ``tidings pause``; a key's parked messages become due at once."""
    app = load_app(app_spec)
    q = queue_of(app, queue)
    moved = run(app, lambda: app.flow.resume(q, key))
    suffix = f" key {key} ({moved} parked messages due now)" if key is not None else ""
    typer.echo(f"resumed {queue}{suffix}")


@flow_cli.command()
def paused(queue: str, app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Whether QUEUE is paused, and which of its keys are."""
    app = load_app(app_spec)
    q = queue_of(app, queue)
    state = run(app, lambda: app.flow.pause_state(q))
    data = {"queue": state.queue, "paused": state.paused, "keys": state.keys}
    if json:
        emit_json(data)
    else:
        typer.echo(f"{queue}: {'paused' if state.paused else 'running'}; paused keys: "
                   f"{', '.join(state.keys) or 'none'}")
