"""``tidings schedules ...`` and ``tidings campaigns ...``: see and control them from a shell.

Registered on the main command in cli.py. The helpers of cli.py are imported inside the
commands because cli.py imports this module while it is itself being imported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

schedules_cli = typer.Typer(help="Recurring schedules: list, show, pause, resume, delete.",
                            no_args_is_help=True)
campaigns_cli = typer.Typer(help="Bulk campaigns: list, show progress, cancel.",
                            no_args_is_help=True)

# The same options as cli.AppOption / cli.JsonOption (not imported: see the module docstring).
AppOption = Annotated[str | None, typer.Option(
    "--app", envvar="TIDINGS_APP", help="module:attribute of your Tidings app (queue configs).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", help="Do not ask")]


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _show(data: dict[str, Any], json: bool) -> None:
    from .cli import console, emit_json

    if json:
        emit_json(data)
        return
    for key, value in data.items():
        if value is not None:
            console.print(f"[bold]{key}[/bold]: {value}")


# -- schedules ------------------------------------------------------------------------------


@schedules_cli.command("list")
def schedules_list(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Every schedule with its next fire time, soonest first."""
    from rich.table import Table

    from .cli import console, emit_json, load_app, run

    app = load_app(app_spec)
    found = run(app, app.schedules.list)
    if json:
        emit_json([s.as_dict() for s in found])
        return
    table = Table("id", "queue", "when", "timezone", "state", "next fire", "last fired",
                  "fired")
    for s in found:
        when = s.cron if s.cron is not None else f"every {s.every}"
        table.add_row(s.id, s.queue, when, s.timezone, s.state, _when(s.next_fire),
                      _when(s.last_fired), str(s.fired_count))
    console.print(table)


@schedules_cli.command("show")
def schedules_show(schedule_id: str, app_spec: AppOption = None,
                   json: JsonOption = False) -> None:
    """One schedule: definition, state, next and last fire times."""
    from .cli import load_app, run

    app = load_app(app_spec)
    _show(run(app, lambda: app.schedules.get(schedule_id)).as_dict(), json)


@schedules_cli.command("pause")
def schedules_pause(schedule_id: str, app_spec: AppOption = None) -> None:
    """Stop firing from the next tick, until resumed."""
    from .cli import load_app, run

    app = load_app(app_spec)
    run(app, lambda: app.schedules.pause(schedule_id))
    typer.echo(f"{schedule_id}: paused")


@schedules_cli.command("resume")
def schedules_resume(schedule_id: str, app_spec: AppOption = None) -> None:
    """Fire again from the next occurrence after now (those while paused are skipped)."""
    from .cli import load_app, run

    app = load_app(app_spec)
    schedule = run(app, lambda: app.schedules.resume(schedule_id))
    typer.echo(f"{schedule_id}: resumed; next fire {_when(schedule.next_fire)}")


@schedules_cli.command("delete")
def schedules_delete(schedule_id: str, yes: YesOption = False,
                     app_spec: AppOption = None) -> None:
    """Delete a schedule for good."""
    from .cli import console, load_app, run

    if not yes:
        typer.confirm(f"delete schedule {schedule_id}?", abort=True)
    app = load_app(app_spec)
    if not run(app, lambda: app.schedules.delete(schedule_id)):
        console.print(f"[red]no schedule {schedule_id}[/red]")
        raise typer.Exit(1)
    typer.echo(f"{schedule_id}: deleted")


# -- campaigns ------------------------------------------------------------------------------


@campaigns_cli.command("list")
def campaigns_list(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Every campaign with its counters, newest first."""
    from rich.table import Table

    from .cli import console, emit_json, load_app, run
    from .scheduling.campaigns import Campaigns

    app = load_app(app_spec)
    found = run(app, Campaigns.of(app).list)
    if json:
        emit_json([p.as_dict() for p in found])
        return
    table = Table("id", "queue", "status", "scheduled", "pending", "released", "processed",
                  "failed", "cancelled", "created")
    for p in found:
        table.add_row(p.id, p.queue, p.status, str(p.scheduled), str(p.pending),
                      str(p.released), str(p.processed), str(p.failed), str(p.cancelled),
                      _when(p.created_at))
    console.print(table)


@campaigns_cli.command("show")
def campaigns_show(campaign_id: str, app_spec: AppOption = None,
                   json: JsonOption = False) -> None:
    """One campaign's progress."""
    from .cli import load_app, run
    from .scheduling.campaigns import Campaigns

    app = load_app(app_spec)
    _show(run(app, lambda: Campaigns.of(app).progress(campaign_id)).as_dict(), json)


@campaigns_cli.command("cancel")
def campaigns_cancel(campaign_id: str, yes: YesOption = False,
                     app_spec: AppOption = None) -> None:
    """Cancel every message of the campaign that was not released yet."""
    from .cli import load_app, run
    from .scheduling.campaigns import Campaigns

    if not yes:
        typer.confirm(f"cancel campaign {campaign_id}?", abort=True)
    app = load_app(app_spec)
    progress = run(app, lambda: Campaigns.of(app).cancel(campaign_id))
    typer.echo(f"{campaign_id}: cancelled {progress.cancelled}; {progress.released} had "
               "been released already")
