"""``tidings webhooks ...``: the subscribers' webhook endpoints (the registry of
tidings.integrations.webhook_endpoints): list them, re-enable one the workers disabled after
repeated failure, or disable one by hand. Registered on the main command in cli/main.py.

Secrets are never shown. Registering an endpoint (with its secret) is the application's
call, ``EndpointRegistry.put``, not a command line that would leave the secret in a shell
history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .authz import authorized
from .output import show_table
from .support import AppOption, Cli, CommandFailed, JsonOption, console, emit_json, load_app, run

# httpx and standardwebhooks are imported by the commands, not by every `tidings` start.
if TYPE_CHECKING:
    from ..app import Tidings
    from ..integrations.webhook_endpoints import EndpointRegistry

webhooks_cli = Cli(help="Webhook endpoints per subscriber: list, enable, disable.")
SubscriberArg = Annotated[str, typer.Argument(metavar="SUBSCRIBER", help="The subscriber.")]


def _registry(app: Tidings) -> EndpointRegistry:
    from ..integrations.webhook_endpoints import EndpointRegistry

    return EndpointRegistry(app)


@webhooks_cli.command("list")
def list_(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Every registered endpoint: URL, failed attempts in a row, disabled and why."""
    app = load_app(app_spec)

    async def body() -> list[dict[str, Any]]:
        return [{"subscriber": e.subscriber, "url": e.url, "failures": e.failures,
                 "disabled": e.disabled or None} for e in await _registry(app).list()]

    rows = run(app, body)
    if json:
        emit_json(rows)
        return
    show_table(console, ["subscriber", "url", "failures", "disabled"],
               [[r["subscriber"], r["url"], str(r["failures"]), r["disabled"] or "-"]
                for r in rows], ids=["subscriber"], text=["url", "disabled"])


def _set(subscriber: str, app_spec: str | None, reason: str | None) -> None:
    app = load_app(app_spec)
    action = "webhook.disable" if reason else "webhook.enable"

    async def body() -> bool:
        registry = _registry(app)
        async with authorized(app, f"webhooks:{action.split('.')[1]}:{subscriber}", action,
                              subscriber):
            if reason:
                return await registry.disable(subscriber, reason)
            return await registry.enable(subscriber)

    if not run(app, body):
        raise CommandFailed(f"no webhook endpoint for subscriber {subscriber!r}")
    console.print(f"{subscriber}: {'disabled' if reason else 'enabled'}")


@webhooks_cli.command()
def enable(subscriber: SubscriberArg, app_spec: AppOption = None) -> None:
    """Re-enable an endpoint (its failure count reset); then replay its dead letters
    (tidings dlq replay QUEUE) to deliver what it missed."""
    _set(subscriber, app_spec, None)


@webhooks_cli.command()
def disable(subscriber: SubscriberArg, app_spec: AppOption = None,
            reason: Annotated[str, typer.Option(help="Why (shown in dead letters).")] =
            "disabled by an operator") -> None:
    """Disable an endpoint: its messages are dead-lettered until it is enabled."""
    _set(subscriber, app_spec, reason)
