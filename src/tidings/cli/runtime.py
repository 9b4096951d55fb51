"""Queue settings changed on every running worker, without a restart: ``tidings weights``,
``tidings retry`` (see the README, Zero-downtime operations, for the bounds).

Registered on the main command in :mod:`tidings.cli.main`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .authz import on_queue
from .support import AppOption, finite, load_app, run

QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="A queue name.")]


def retry(
        queue: QueueArg,
        max_attempts: Annotated[int | None, typer.Option(min=1, help="Attempts in all.")] = None,
        base: Annotated[float | None, typer.Option(
            callback=finite, help="Seconds of the first backoff.")] = None,
        factor: Annotated[float | None, typer.Option(
            callback=finite, help="Backoff growth per attempt.")] = None,
        cap: Annotated[float | None, typer.Option(
            callback=finite, help="Longest backoff, seconds.")] = None,
        jitter: Annotated[float | None, typer.Option(
            callback=finite, help="Randomised share of each backoff, 0 to 1.")] = None,
        app_spec: AppOption = None) -> None:
    """Change a queue's retry policy on every running worker, without a restart (within a
    heartbeat); no option: back to the policy the code declares."""
    app = load_app(app_spec)
    changes = {k: v for k, v in (("max_attempts", max_attempts), ("base", base),
                                 ("factor", factor), ("cap", cap), ("jitter", jitter))
               if v is not None}

    async def body() -> Any:
        async with on_queue(app, queue, "queue:retry", "queue.retry", **changes) as q:
            return await q.set_retry(**changes)

    policy = run(app, body)
    typer.echo(f"{queue}: retry max_attempts={policy.max_attempts} base={policy.base:g}s "
               f"factor={policy.factor:g} cap={policy.cap:g}s jitter={policy.jitter:g}"
               f"{'' if changes else ' (as the code declares)'}")


def weights(queue: QueueArg, high: int, normal: int, low: int, app_spec: AppOption = None) -> None:
    """Change a queue's lane weights on every running worker, without a restart."""
    app = load_app(app_spec)

    async def body() -> None:
        async with on_queue(app, queue, "queue:weights", "queue.weights", high=high,
                            normal=normal, low=low) as q:
            await q.set_weights(high, normal, low)

    run(app, body)
    typer.echo(f"{queue}: weights high={high} normal={normal} low={low}")
