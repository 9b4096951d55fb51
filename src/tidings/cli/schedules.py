"""``tidings schedules ...`` and ``tidings campaigns ...``: see and control them from a shell.

Registered on the main command in cli.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from ..core.errors import CampaignNotFoundError, ScheduleNotFoundError
from ..scheduling.campaigns import Campaigns
from ..scheduling.schedule import Schedule
from .authz import authorized
from .output import duration, progress, show_record, show_table
from .support import (
    AppOption,
    Cli,
    CommandFailed,
    JsonOption,
    YesOption,
    console,
    emit_json,
    load_app,
    run,
    suggest,
)

T = TypeVar("T")
schedules_cli = Cli(help="Recurring schedules: list, show, pause, resume, delete.")
campaigns_cli = Cli(help="Bulk campaigns: list, show progress, pause, resume, update, cancel, "
                    "delete.")
ScheduleArg = Annotated[str, typer.Argument(metavar="SCHEDULE_ID", help="A schedule's id.")]
CampaignArg = Annotated[str, typer.Argument(metavar="CAMPAIGN_ID", help="A campaign's id.")]


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _every(schedule: Schedule) -> str:
    """When a schedule fires, as both ``list`` and ``show`` print it."""
    return schedule.cron if schedule.cron is not None else f"every {duration(schedule.every)}"


async def _schedule_call(app: Any, schedule_id: str,
                         call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, turning a missing schedule into an error that suggests close ids."""
    try:
        return await call()
    except ScheduleNotFoundError:
        ids = {s.id for s in await app.schedules.list()}
        raise CommandFailed(f"no schedule {schedule_id!r}{suggest(schedule_id, ids)}") from None


async def _campaign_call(app: Any, campaign_id: str,
                         call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except CampaignNotFoundError:
        ids = {p.id for p in await Campaigns.of(app).list()}
        raise CommandFailed(f"no campaign {campaign_id!r}{suggest(campaign_id, ids)}") from None


# -- schedules ------------------------------------------------------------------------------


@schedules_cli.command("list")
def schedules_list(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Every schedule with its next fire time, soonest first."""
    app = load_app(app_spec)
    found = run(app, app.schedules.list)
    if json:
        emit_json([s.as_dict() for s in found])
        return
    show_table(console, ["id", "queue", "when", "timezone", "state", "next fire",
                         "last fired", "fired"],
               [[s.id, s.queue, _every(s), s.timezone, s.state, _when(s.next_fire),
                 _when(s.last_fired), s.fired_count] for s in found], ids=["id"])


@schedules_cli.command("show")
def schedules_show(schedule_id: ScheduleArg, app_spec: AppOption = None,
                   json: JsonOption = False) -> None:
    """One schedule: definition, state, next and last fire times."""
    app = load_app(app_spec)
    schedule = run(app, lambda: _schedule_call(app, schedule_id,
                                               lambda: app.schedules.get(schedule_id)))
    data = schedule.as_dict()
    if json:
        emit_json(data)
        return
    data["every"] = None if schedule.every is None else duration(schedule.every)
    data["grace"] = duration(schedule.grace)
    show_record(console, data)


def _schedule_changed(schedule_id: str, action: str,
                      call: Callable[[Any], Awaitable[T]], app_spec: str | None) -> T:
    """``call(app.schedules)`` as an audited ``schedules:write`` operation."""
    app = load_app(app_spec)

    async def body() -> T:
        await _schedule_call(app, schedule_id, lambda: app.schedules.get(schedule_id))
        async with authorized(app, "schedules:write", action, schedule_id):
            return await call(app.schedules)

    return run(app, body)


@schedules_cli.command("pause")
def schedules_pause(schedule_id: ScheduleArg, app_spec: AppOption = None) -> None:
    """Stop firing from the next tick, until resumed."""
    _schedule_changed(schedule_id, "schedules.pause", lambda s: s.pause(schedule_id), app_spec)
    typer.echo(f"{schedule_id}: paused")


@schedules_cli.command("resume")
def schedules_resume(schedule_id: ScheduleArg, app_spec: AppOption = None) -> None:
    """Fire again from the next occurrence after now (those while paused are skipped)."""
    schedule = _schedule_changed(schedule_id, "schedules.resume",
                                 lambda s: s.resume(schedule_id), app_spec)
    typer.echo(f"{schedule_id}: resumed; next fire {_when(schedule.next_fire)}")


@schedules_cli.command("delete")
def schedules_delete(schedule_id: ScheduleArg, yes: YesOption = False,
                     app_spec: AppOption = None) -> None:
    """Delete a schedule for good."""
    app = load_app(app_spec)

    async def body() -> None:
        await _schedule_call(app, schedule_id, lambda: app.schedules.get(schedule_id))
        if not yes:
            typer.confirm(f"delete schedule {schedule_id}?", abort=True)
        async with authorized(app, "schedules:write", "schedules.delete", schedule_id):
            if not await app.schedules.delete(schedule_id):
                raise CommandFailed(f"no schedule {schedule_id!r}")

    run(app, body)
    typer.echo(f"{schedule_id}: deleted")


# -- campaigns ------------------------------------------------------------------------------


@campaigns_cli.command("list")
def campaigns_list(app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Every campaign with its counters, newest first."""
    app = load_app(app_spec)
    found = run(app, Campaigns.of(app).list)
    if json:
        emit_json([p.as_dict() for p in found])
        return
    show_table(console, ["id", "queue", "status", "scheduled", "pending", "released",
                         "processed", "failed", "cancelled", "created"],
               [[p.id, p.queue, f"{p.status} (paused)" if p.paused else p.status,
                 p.scheduled, p.pending, p.released, p.processed, p.failed, p.cancelled,
                 _when(p.created_at)] for p in found], ids=["id"])


@campaigns_cli.command("show")
def campaigns_show(campaign_id: CampaignArg, app_spec: AppOption = None,
                   json: JsonOption = False) -> None:
    """One campaign's progress."""
    app = load_app(app_spec)
    found = run(app, lambda: _campaign_call(app, campaign_id,
                                            lambda: Campaigns.of(app).progress(campaign_id)))
    if json:
        emit_json(found.as_dict())
    else:
        show_record(console, found.as_dict())


@campaigns_cli.command("cancel")
def campaigns_cancel(campaign_id: CampaignArg, yes: YesOption = False,
                     app_spec: AppOption = None, json: JsonOption = False) -> None:
    """Cancel every message of the campaign that was not released yet."""
    app = load_app(app_spec)
    campaigns = Campaigns.of(app)

    async def body() -> Any:
        before = await _campaign_call(app, campaign_id,
                                      lambda: campaigns.progress(campaign_id))
        if not yes:
            typer.confirm(f"cancel campaign {campaign_id} ({before.pending} messages not "
                          "released yet)?", abort=True)
        async with authorized(app, "campaigns:write", "campaigns.cancel", campaign_id):
            with progress(f"cancelling {campaign_id}", console, quiet=json) as report:
                return await campaigns.cancel(campaign_id, progress=report)

    done = run(app, body)
    if json:
        emit_json(done.as_dict())
        return
    typer.echo(f"{campaign_id}: cancelled {done.cancelled}; {done.released} had been "
               "released already")


def _changed(campaign_id: str, action: str, call: Callable[[Campaigns], Awaitable[T]],
             app_spec: str | None, **detail: Any) -> T:
    """``call(campaigns)`` as an audited ``campaigns:write`` operation."""
    app = load_app(app_spec)

    async def body() -> T:
        campaigns = Campaigns.of(app)
        await _campaign_call(app, campaign_id, lambda: campaigns.progress(campaign_id))
        async with authorized(app, "campaigns:write", action, campaign_id, **detail):
            return await call(campaigns)

    return run(app, body)


@campaigns_cli.command("pause")
def campaigns_pause(campaign_id: CampaignArg, app_spec: AppOption = None) -> None:
    """Hold every message not released yet (those released go on), until resumed."""
    done = _changed(campaign_id, "campaigns.pause", lambda c: c.pause(campaign_id), app_spec)
    typer.echo(f"{campaign_id}: paused; {done.pending} messages held")


@campaigns_cli.command("resume")
def campaigns_resume(campaign_id: CampaignArg, app_spec: AppOption = None) -> None:
    """Release again from where it stopped: due times move later by the pause's length."""
    done = _changed(campaign_id, "campaigns.resume", lambda c: c.resume(campaign_id), app_spec)
    typer.echo(f"{campaign_id}: resumed; {done.pending} messages pending")


@campaigns_cli.command("update")
def campaigns_update(
    campaign_id: CampaignArg,
    throttle_per_minute: Annotated[int | None, typer.Option(
        "--throttle-per-minute", help="New release rate for the messages not released yet.")
    ] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="New send time (ISO 8601 with offset), before anything was released.")
    ] = None,
    app_spec: AppOption = None, json: JsonOption = False,
) -> None:
    """Change the throttle or the send time of a campaign sent at one instant."""
    changes: dict[str, Any] = {}
    if throttle_per_minute is not None:
        changes["throttle_per_minute"] = throttle_per_minute
    if at is not None:
        try:
            changes["at"] = datetime.fromisoformat(at)
        except ValueError:
            raise CommandFailed(f"--at: {at!r} is not an ISO 8601 date and time") from None
    if not changes:
        raise CommandFailed("give --throttle-per-minute or --at")
    done = _changed(campaign_id, "campaigns.update",
                    lambda c: c.update(campaign_id, **changes), app_spec,
                    fields=sorted(changes))
    if json:
        emit_json(done.as_dict())
    else:
        typer.echo(f"{campaign_id}: updated {', '.join(sorted(changes))}")


@campaigns_cli.command("delete")
def campaigns_delete(campaign_id: CampaignArg, yes: YesOption = False,
                     app_spec: AppOption = None) -> None:
    """Delete a finished or cancelled campaign and its counters."""
    if not yes:
        typer.confirm(f"delete campaign {campaign_id}?", abort=True)
    _changed(campaign_id, "campaigns.delete", lambda c: c.delete(campaign_id), app_spec)
    typer.echo(f"{campaign_id}: deleted")
