"""Recurring schedules (list, show, create, update, pause, resume, delete) and bulk
campaigns (list, progress, create, pause, resume, update, cancel, delete):
``app.schedules`` and ``Campaigns``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..core.errors import ScheduleNotFoundError
from ..scheduling.campaign_send import Recipient
from ..scheduling.campaigns import Campaigns
from .common import Caller, doc, queue_of
from .models import CampaignIn, CampaignUpdateIn, ScheduleIn, ScheduleUpdateIn

router = APIRouter(tags=["schedules and campaigns"])
READ, WRITE = "schedules:read", "schedules:write"
CAMPAIGNS_READ, CAMPAIGNS_WRITE = "campaigns:read", "campaigns:write"



@router.get("/schedules", **doc())
async def list_schedules(access: Caller) -> list[dict[str, Any]]:
    """Every schedule with its next fire time, soonest first."""
    access.require(READ)
    return [s.as_dict() for s in await access.app.schedules.list()]


@router.get("/schedules/{schedule_id}", **doc())
async def show_schedule(schedule_id: str, access: Caller) -> dict[str, Any]:
    access.require(READ)
    return (await access.app.schedules.get(schedule_id)).as_dict()


@router.post("/schedules", **doc(status=201))
async def create_schedule(body: ScheduleIn, access: Caller) -> dict[str, Any]:
    """Store a schedule (``cron`` or ``every`` seconds, in ``timezone``), to a queue or a
    topic; 409 if the id is taken unless ``replace``."""
    if body.queue is not None:
        await queue_of(access, body.queue)  # a queue the server knows: declared for add()
    options = body.model_dump(exclude={"id"})
    async with access.change(WRITE, "schedules.create", body.id or "") as operation:
        made = await access.app.schedules.add(body.id, **options)
        operation.detail["id"] = made.id
    return made.as_dict()


@router.patch("/schedules/{schedule_id}", **doc())
async def update_schedule(schedule_id: str, body: ScheduleUpdateIn,
                          access: Caller) -> dict[str, Any]:
    """Change the definition fields given; applies from the next occurrence."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("queue") is not None:
        await queue_of(access, changes["queue"])
    async with access.change(WRITE, "schedules.update", schedule_id, fields=sorted(changes)):
        return (await access.app.schedules.update(schedule_id, **changes)).as_dict()


@router.post("/schedules/{schedule_id}/pause", **doc())
async def pause_schedule(schedule_id: str, access: Caller) -> dict[str, Any]:
    async with access.change(WRITE, "schedules.pause", schedule_id):
        return (await access.app.schedules.pause(schedule_id)).as_dict()


@router.post("/schedules/{schedule_id}/resume", **doc())
async def resume_schedule(schedule_id: str, access: Caller) -> dict[str, Any]:
    async with access.change(WRITE, "schedules.resume", schedule_id):
        return (await access.app.schedules.resume(schedule_id)).as_dict()


@router.delete("/schedules/{schedule_id}", **doc())
async def delete_schedule(schedule_id: str, access: Caller) -> dict[str, Any]:
    async with access.change(WRITE, "schedules.delete", schedule_id):
        if not await access.app.schedules.delete(schedule_id):
            raise ScheduleNotFoundError(schedule_id)
    return {"id": schedule_id, "deleted": True}


@router.get("/campaigns", **doc())
async def list_campaigns(access: Caller) -> list[dict[str, Any]]:
    """Every campaign with its counters, newest first."""
    access.require(CAMPAIGNS_READ)
    return [p.as_dict() for p in await Campaigns.of(access.app).list()]


@router.get("/campaigns/{campaign_id}", **doc())
async def campaign_progress(campaign_id: str, access: Caller) -> dict[str, Any]:
    """One campaign's progress: scheduled, pending, released, processed, failed."""
    access.require(CAMPAIGNS_READ)
    return (await Campaigns.of(access.app).progress(campaign_id)).as_dict()


@router.post("/campaigns", **doc(status=201))
async def create_campaign(body: CampaignIn, access: Caller) -> dict[str, Any]:
    """Publish one message per recipient at its local time (or ``at``); calling again
    with the same id and arguments resumes an interrupted run."""
    await queue_of(access, body.queue)
    options = body.model_dump(exclude={"id", "queue", "recipients"})
    recipients = [Recipient(r.id, r.payload, r.zone) for r in body.recipients]
    async with access.change(CAMPAIGNS_WRITE, "campaigns.create", body.id,
                             recipients=len(recipients)):
        made = await Campaigns.of(access.app).schedule(body.id, body.queue, recipients,
                                                       **options)
    return made.as_dict()


@router.post("/campaigns/{campaign_id}/cancel", **doc())
async def cancel_campaign(campaign_id: str, access: Caller) -> dict[str, Any]:
    """Cancel every message of the campaign not released yet; the final counts."""
    async with access.change(CAMPAIGNS_WRITE, "campaigns.cancel", campaign_id):
        return (await Campaigns.of(access.app).cancel(campaign_id)).as_dict()


@router.post("/campaigns/{campaign_id}/pause", **doc())
async def pause_campaign(campaign_id: str, access: Caller) -> dict[str, Any]:
    """Hold every message not released yet (released ones go on); 409 while scheduling or
    once cancelled."""
    async with access.change(CAMPAIGNS_WRITE, "campaigns.pause", campaign_id):
        return (await Campaigns.of(access.app).pause(campaign_id)).as_dict()


@router.post("/campaigns/{campaign_id}/resume", **doc())
async def resume_campaign(campaign_id: str, access: Caller) -> dict[str, Any]:
    """Release again from where it stopped: held due times move later by the pause."""
    async with access.change(CAMPAIGNS_WRITE, "campaigns.resume", campaign_id):
        return (await Campaigns.of(access.app).resume(campaign_id)).as_dict()


@router.patch("/campaigns/{campaign_id}", **doc())
async def update_campaign(campaign_id: str, body: CampaignUpdateIn,
                          access: Caller) -> dict[str, Any]:
    """Change ``throttle_per_minute`` (respacing the messages not released yet) or ``at``
    (before any was released) of a campaign sent at one instant."""
    changes = body.model_dump(exclude_unset=True)
    async with access.change(CAMPAIGNS_WRITE, "campaigns.update", campaign_id,
                             fields=sorted(changes)):
        return (await Campaigns.of(access.app).update(campaign_id, **changes)).as_dict()


@router.delete("/campaigns/{campaign_id}", **doc())
async def delete_campaign(campaign_id: str, access: Caller) -> dict[str, Any]:
    """Delete a finished or cancelled campaign; 409 while messages are not released yet."""
    async with access.change(CAMPAIGNS_WRITE, "campaigns.delete", campaign_id):
        await Campaigns.of(access.app).delete(campaign_id)
    return {"id": campaign_id, "deleted": True}
