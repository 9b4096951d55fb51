"""Observability commands: ``tidings stats``, ``tidings exporter``, ``tidings alerts rules``.

Registered on the main command in :mod:`tidings.cli.main`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.keys import LANE_NAMES
from .output import show_table
from .support import AppOption, Cli, JsonOption, console, emit_json, load_app, run

observe_cli = Cli(help="Fleet figures, the metrics exporter and alert rules.",
                  no_args_is_help=False)
alerts_cli = Cli(help="Alert rules generated from the alert thresholds.")

Port = Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on (0: any free).")]
Host = Annotated[str, typer.Option(help="Address to bind.")]


@observe_cli.command()
def stats(
    queue: Annotated[list[str] | None, typer.Option(
        "--queue", metavar="QUEUE", help="Only this queue (repeat for more).")] = None,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Fleet-wide figures for autoscalers: depth, oldest age, lag, consumers per queue.

    Per lane: waiting, held by consumers, oldest waiting age, group lag; per queue:
    delayed, dead letters, live consumers, server-side counters; Redis memory, clients.
    """
    from ..observability.fleet import read_fleet
    from .support import resolve_queue

    app = load_app(app_spec)

    async def body() -> Any:
        names = None
        if queue:
            names = [(await resolve_queue(app, name)).name for name in queue]
        return await read_fleet(app, names, breakers=app.observability.breakers)

    snapshot = run(app, body)
    if json:
        emit_json(snapshot.as_dict())
        return
    rows = []
    for q in snapshot.queues:
        for lane in LANE_NAMES:
            f = q.lanes[lane]
            age = "-" if f.oldest_age is None else f"{f.oldest_age:.1f}s"
            rows.append([q.name, lane, f.waiting, f.held, age, f.lag, q.delayed, q.dead,
                         q.consumers])
    show_table(console, ["queue", "lane", "waiting", "held", "oldest", "lag", "delayed",
                         "dlq", "consumers"], rows, ids=["queue"])


@observe_cli.command()
def exporter(port: Port = 9465, host: Host = "0.0.0.0", app_spec: AppOption = None) -> None:
    """Serve the fleet-wide metrics (/metrics), /stats, /livez and /readyz until SIGTERM."""
    from ..observability.exporter import run_exporter

    app = load_app(app_spec)

    def ready(bound: int) -> None:
        print(f"tidings exporter serving http://{host}:{bound}/metrics", file=sys.stderr,
              flush=True)

    run(app, lambda: run_exporter(app, host=host, port=port,
                                  breakers=app.observability.breakers, on_ready=ready))


@alerts_cli.command("rules")
def alerts_rules(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the rules here instead of stdout.")] = None,
    app_spec: AppOption = None,
) -> None:
    """Print Prometheus alerting rules for the thresholds (settings file, --app's code)."""
    from ..observability.alerts import rules_yaml

    app = load_app(app_spec)
    text = rules_yaml(app.observability.alert_settings)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}")
