"""The dashboard's actions (POST, CSRF-checked): each one authorised and audited with
:meth:`Tidings.audit.operation <tidings.security.audit.Audit.operation>`, the same check
and trail as the CLI's and the API's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..core.errors import ValidationError
from ..queues.dead_letters import make_filter
from ..scheduling.campaigns import Campaigns
from . import session
from .pages import queue_named
from .web import Dashboard, NotFound

if TYPE_CHECKING:
    from ..security.principals import Principal

Fields = dict[str, Any]


async def pause(dash: Dashboard, request: Request, who: Principal, form: Fields) -> Response:
    queue = await queue_named(dash, request.path_params["name"])
    async with dash.app.audit.operation(who, f"queue:pause:{queue.name}", "queue.pause",
                                        queue.name):
        await dash.app.flow.pause(queue)
    session.flash(request, f"paused {queue.name}: workers take none of its messages")
    return dash.redirect(request, f"/queues/{queue.name}")


async def resume(dash: Dashboard, request: Request, who: Principal, form: Fields) -> Response:
    queue = await queue_named(dash, request.path_params["name"])
    async with dash.app.audit.operation(who, f"queue:pause:{queue.name}", "queue.resume",
                       queue.name):
        await dash.app.flow.resume(queue)
    session.flash(request, f"resumed {queue.name}")
    return dash.redirect(request, f"/queues/{queue.name}")


def _weight(form: Fields, lane: str) -> int:
    value = str(form.get(lane) or "").strip()
    try:
        return int(value)
    except ValueError:
        raise ValidationError(lane, f"must be a whole number, got {value!r}") from None


async def weights(dash: Dashboard, request: Request, who: Principal, form: Fields) -> Response:
    queue = await queue_named(dash, request.path_params["name"])
    high, normal, low = (_weight(form, lane) for lane in ("high", "normal", "low"))
    async with dash.app.audit.operation(who, f"queue:weights:{queue.name}", "queue.weights",
                       queue.name, high=high, normal=normal, low=low):
        await queue.set_weights(high, normal, low)
    session.flash(request, f"{queue.name}: weights high={high} normal={normal} low={low}")
    return dash.redirect(request, f"/queues/{queue.name}")


def _selection(form: Fields) -> tuple[list[str] | None, dict[str, str | None], str]:
    """The dead letters a form picks (ids, or a filter, or all) and how to say it."""
    ids = [i for i in form.get("ids") or [] if i]
    chosen = {key: (str(form.get(key) or "").strip() or None)
              for key in ("reason", "error_type")}
    if ids:
        return ids, chosen, f"{len(ids)} dead letter{'s' if len(ids) > 1 else ''}"
    if form.get("all") != "1" and not any(chosen.values()):
        raise ValidationError("ids", "select dead letters, or choose all (or a filter)")
    said = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in chosen.items() if v)
    return None, chosen, "every dead letter" + (f" with {said}" if said else "")


async def _dead_letters(dash: Dashboard, request: Request, who: Principal, form: Fields,
                        verb: str) -> Response:
    """Replay or purge: first a confirmation page, then (confirmed) the operation."""
    queue = await queue_named(dash, request.path_params["name"])
    ids, chosen, what = _selection(form)
    permission = f"dlq:{verb}:{queue.name}"
    if form.get("confirmed") != "1":
        who.require(permission)  # no confirmation page for what would be refused
        return dash.render(request, "confirm.html", who, queue=queue.name, verb=verb,
                           what=what, ids=ids or [], chosen=chosen, all=form.get("all"))
    where = (None if ids is not None
             else make_filter(reason=chosen["reason"], error_type=chosen["error_type"]))
    async with dash.app.audit.operation(who, permission, f"dlq.{verb}", queue.name,
                       ids=ids, **chosen) as op:
        if verb == "replay":
            done = await queue.dlq.replay(ids, where=where)
            skipped = len(done.skipped)
        else:
            done, skipped = await queue.dlq.purge(ids, where=where), 0
        op.detail["count"] = int(done)
    note = f" ({skipped} could not be replayed: purge them)" if skipped else ""
    session.flash(request, f"{verb}ed {int(done)} of {what} of {queue.name}{note}")
    return dash.redirect(request, f"/queues/{queue.name}/dlq")


async def replay(dash: Dashboard, request: Request, who: Principal, form: Fields) -> Response:
    return await _dead_letters(dash, request, who, form, "replay")


async def purge(dash: Dashboard, request: Request, who: Principal, form: Fields) -> Response:
    return await _dead_letters(dash, request, who, form, "purge")


async def breaker_reset(dash: Dashboard, request: Request, who: Principal,
                        form: Fields) -> Response:
    name = request.path_params["name"]
    if name not in await dash.app.flow.breaker_states():
        raise NotFound(f"no breaker {name!r}")
    async with dash.app.audit.operation(who, f"breakers:reset:{name}", "breaker.reset", name):
        await dash.app.flow.breaker(name).reset()
    session.flash(request, f"breaker {name} closed")
    return dash.redirect(request, "/breakers")


async def schedule_toggle(dash: Dashboard, request: Request, who: Principal,
                          form: Fields) -> Response:
    schedule_id, verb = request.path_params["id"], request.path_params["verb"]
    if verb not in ("pause", "resume"):
        raise NotFound(f"no schedule action {verb!r}")
    async with dash.app.audit.operation(who, "schedules:write", f"schedules.{verb}", schedule_id):
        if verb == "pause":
            await dash.app.schedules.pause(schedule_id)
        else:
            await dash.app.schedules.resume(schedule_id)
    session.flash(request, f"schedule {schedule_id}: {verb}d")
    return dash.redirect(request, "/schedules")


async def campaign_cancel(dash: Dashboard, request: Request, who: Principal,
                          form: Fields) -> Response:
    campaign_id = request.path_params["id"]
    async with dash.app.audit.operation(who, "campaigns:write", "campaigns.cancel", campaign_id):
        final = await Campaigns.of(dash.app).cancel(campaign_id)
    session.flash(request, f"campaign {campaign_id}: {final.cancelled} messages cancelled")
    return dash.redirect(request, "/schedules")


async def campaign_toggle(dash: Dashboard, request: Request, who: Principal,
                          form: Fields) -> Response:
    campaign_id, verb = request.path_params["id"], request.path_params["verb"]
    if verb not in ("pause", "resume"):
        raise NotFound(f"no campaign action {verb!r}")
    campaigns = Campaigns.of(dash.app)
    async with dash.app.audit.operation(who, "campaigns:write", f"campaigns.{verb}",
                                        campaign_id):
        if verb == "pause":
            done = await campaigns.pause(campaign_id)
        else:
            done = await campaigns.resume(campaign_id)
    held = f"{done.pending} messages held" if done.paused else f"{done.pending} pending"
    session.flash(request, f"campaign {campaign_id}: {verb}d; {held}")
    return dash.redirect(request, "/schedules")


Wrap = Callable[[Callable[[Dashboard, Request, Any, Fields], Awaitable[Response]]],
                Callable[[Request], Awaitable[Response]]]


def routes(action: Wrap) -> list[Route]:
    post = ["POST"]
    return [
        Route("/queues/{name}/pause", action(pause), methods=post),
        Route("/queues/{name}/resume", action(resume), methods=post),
        Route("/queues/{name}/weights", action(weights), methods=post),
        Route("/queues/{name}/dlq/replay", action(replay), methods=post),
        Route("/queues/{name}/dlq/purge", action(purge), methods=post),
        Route("/breakers/{name}/reset", action(breaker_reset), methods=post),
        Route("/schedules/{id}/{verb}", action(schedule_toggle), methods=post),
        Route("/campaigns/{id}/cancel", action(campaign_cancel), methods=post),
        Route("/campaigns/{id}/{verb}", action(campaign_toggle), methods=post),
    ]
