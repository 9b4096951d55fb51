"""Flow-control commands: ``tidings breakers``, ``tidings pause``, ``tidings resume``.

Registered on the main command in :mod:`tidings.cli`. ``--app`` gives the commands the
breakers and queues the workers declare; without it they use what the workers registered
in Redis (breakers) and default queue settings.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..flow.breaker import breaker_view
from .authz import authorized, on_queue
from .output import show_table
from .support import (
    EXIT_USAGE,
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    console,
    emit_json,
    load_app,
    resolve_queue,
    run,
    suggest,
)

flow_cli = Cli(help="Flow control: circuit breakers, pausing queues and keys.",
               no_args_is_help=False)

QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="A queue name.")]
KeyOption = Annotated[str | None, typer.Option("--key", help="Only this key of the queue.")]


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
        states = await app.flow.breaker_states()
        if reset is not None:
            if reset not in states:
                raise CommandFailed(f"no breaker {reset!r}{suggest(reset, set(states))}; "
                                    f"known: {', '.join(sorted(states)) or 'none'}")
            async with authorized(app, f"breakers:reset:{reset}", "breaker.reset", reset):
                await app.flow.breaker(reset).reset()
            states = await app.flow.breaker_states()
        return states

    states = run(app, body)
    rows = [breaker_view(name, s, config) for name, (s, config) in states.items()]
    if json:
        emit_json(rows)
        return
    show_table(console, ["breaker", "state", "failures/calls", "opened at", "next probe",
                         "queues"],
               [[r["name"], r["state"], f"{r['failures']}/{r['calls']}", r["opened_at"] or "-",
                 r["next_probe_at"] or "-", ", ".join(r["queues"])] for r in rows],
               ids=["breaker"], text=["queues"])


@flow_cli.command()
def pause(queue: QueueArg, key: KeyOption = None, app_spec: AppOption = None) -> None:
    """Stop every worker from taking QUEUE's messages (or one key's); they stay queued."""
    app = load_app(app_spec)

    async def pause_it() -> None:
        # A pause is a flag only plain-queue workers read: refuse rather than "succeed".
        if await app.broker.client.exists(app.key_space.ordered(queue).meta):
            raise CommandFailed(f"{queue!r} is an ordered queue; pause does not apply to "
                                "ordered queues", EXIT_USAGE)
        async with on_queue(app, queue, "queue:pause", "queue.pause", key=key) as q:
            await app.flow.pause(q, key)

    run(app, pause_it)
    typer.echo(f"paused {queue}" + (f" key {key}" if key is not None else ""))
    if key is not None:
        typer.echo(f"note: only workers whose app declares app.flow.pausable({queue!r}, "
                   "key=...) hold back a paused key", err=True)


@flow_cli.command()
def resume(queue: QueueArg, key: KeyOption = None, app_spec: AppOption = None) -> None:
    """Undo 'tidings pause'; a key's parked messages become due at once."""
    app = load_app(app_spec)

    async def resume_it() -> int:
        async with on_queue(app, queue, "queue:pause", "queue.resume", key=key) as q:
            return await app.flow.resume(q, key)

    moved = run(app, resume_it)
    suffix = f" key {key} ({moved} parked messages due now)" if key is not None else ""
    typer.echo(f"resumed {queue}{suffix}")


@flow_cli.command()
def paused(queue: QueueArg, app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Whether QUEUE is paused, and which of its keys are."""
    app = load_app(app_spec)

    async def state_of() -> Any:
        return await app.flow.pause_state(await resolve_queue(app, queue))

    state = run(app, state_of)
    data = {"queue": state.queue, "paused": state.paused, "keys": state.keys}
    if json:
        emit_json(data)
    else:
        typer.echo(f"{queue}: {'paused' if state.paused else 'running'}; paused keys: "
                   f"{', '.join(state.keys) or 'none'}")
