"""Queue settings changed on every running worker, without a restart: ``tidings weights``,
``tidings retry``, ``tidings ratelimit`` (see the README, Zero-downtime operations, for the
bounds).

Registered on the main command in :mod:`tidings.cli.main`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..flow.ratelimit import RateLimit, RateSetting
from .authz import authorized, on_queue
from .support import AppOption, CommandFailed, finite, load_app, run, suggest

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


def ratelimit(
        name: Annotated[str, typer.Argument(metavar="NAME", help="A queue rate limit's name.")],
        rate: Annotated[str | None, typer.Option(
            help='Tokens per second, or "COUNT/[N]UNIT" ("200/s", "5000/h").')] = None,
        burst: Annotated[int | None, typer.Option(
            help="Bucket size (default: one second's worth of the rate).")] = None,
        reset: Annotated[bool, typer.Option(
            "--reset", help="Back to the rate the code declares.")] = False,
        app_spec: AppOption = None) -> None:
    """Show a queue rate limit's rate, or change it on every running worker from their next
    fetch, without a restart (--rate; --reset: back to the code's)."""
    app = load_app(app_spec)
    if rate is not None and reset:
        raise typer.BadParameter("give --rate or --reset, not both", param_hint="--reset")
    if rate is None and burst is not None:
        raise typer.BadParameter("--burst needs --rate", param_hint="--burst")

    async def body() -> RateSetting:
        known = [limit.name for limit in app.flow.rate_limits]
        if name not in known:  # a miss, refused before anything is recorded
            raise CommandFailed(f"no queue rate limit {name!r}{suggest(name, known)} in the "
                                f"app (--app); declared: {', '.join(known) or 'none'}")
        current = await app.flow.rate_setting(name)
        if rate is None and not reset:
            return current
        value = _rate_value(rate) if rate is not None else None
        if value is not None:
            RateLimit.checked(value, burst)  # bad input: refused before it is recorded
        detail = {"reset": True} if value is None else {"rate": value, "burst": burst}
        async with authorized(app, f"ratelimits:write:{name}", "ratelimit.set", name,
                              **detail):
            if value is None:
                return await app.flow.reset_rate(name)
            return await app.flow.set_rate(name, value, burst)

    setting = run(app, body)
    state = (f"rate={setting.rate:g}/s burst={setting.burst}"
             + (f" (code: {setting.code_rate:g}/s burst={setting.code_burst})"
                if setting.override else " (as the code declares)"))
    typer.echo(f"{name}: {state}")


def _rate_value(rate: str) -> float | str:
    """A plain number is tokens per second; anything else a ``"COUNT/UNIT"`` spec."""
    try:
        return float(rate)
    except ValueError:
        return rate
