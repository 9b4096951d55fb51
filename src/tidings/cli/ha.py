"""High-availability commands: ``tidings ha switchover``.

Registered on the main command in :mod:`tidings.cli.main`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from .support import EXIT_USAGE, AppOption, Cli, CommandFailed, emit_json, finite, load_app

ha_cli = Cli(help="High availability: a planned switch of the Sentinel-managed primary.")


@ha_cli.command("switchover")
def switchover_command(
        timeout: Annotated[float, typer.Option(
            min=1, callback=finite,
            help="Seconds the switch (and the pause of writes) may take at most.")] = 30.0,
        app_spec: AppOption = None,
        json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Move the primary to a replica without losing a write: writes wait, the replicas
    catch up, the sentinels promote one, the old primary follows it, writes resume."""
    from ..core.sentinel import is_sentinel_url
    from ..engine.switchover import switchover
    from ..engine.tls import connection_url

    settings = load_app(app_spec).settings
    url = settings.redis_url
    if url is None or not is_sentinel_url(url):
        raise CommandFailed("a switchover needs TIDINGS_REDIS_URL=redis+sentinel://...: "
                            "the primary is one the sentinels manage", EXIT_USAGE)
    _, tls = connection_url(url, settings.security)
    result = asyncio.run(switchover(url, timeout=timeout, tls=tls))
    if json:
        emit_json({"old": list(result.old), "new": list(result.new),
                   "writes_paused_s": result.writes_paused_s})
        return
    typer.echo(f"primary {result.old[0]}:{result.old[1]} -> {result.new[0]}:{result.new[1]} "
               f"(writes waited {result.writes_paused_s:.2f}s)")
