"""Pausing, resuming, updating and deleting a campaign (one script call each).

A campaign's messages sit in the queue's delayed set until a worker's fetch releases them
at their due time, so *pause* takes the ones not released yet out of the delayed set into
the campaign's ``held`` zset (nothing can release them there; those already released are
unaffected), and *resume* puts them back with every due time moved later by the length of
the pause: the throttle's spacing continues from where it stopped instead of releasing in
one burst everything the pause held up. (A local-time campaign resumed after its recipients'
09:00 so sends late by the pause's length; cancel it instead if late is worse than never.)

*update* may change, while the campaign runs or is paused, ``throttle_per_minute`` (the
messages not released yet are spaced evenly at the new rate, in their order, from the
campaign's send time or now, whichever is later; only for campaigns sent ``at`` one
instant, where that keeps every message at or after its time) and ``at`` (only before any
message was released: every due time moves by the difference). Any other field is
refused. *delete* removes a finished (nothing pending) or cancelled campaign's keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import CampaignConflictError, CampaignNotFoundError, ValidationError
from ..core.stored import text
from ..engine.scripts import LIBRARY
from .campaign_progress import read_progress
from .recurrence import epoch_ms

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost

_PAUSE, _RESUME, _RETIME, _DELETE = (LIBRARY[f"campaign_{n}"]
                                     for n in ("pause", "resume", "retime", "delete"))
UPDATABLE = ("throttle_per_minute", "at")
_MINUTE_MS = 60_000


def _keys(app: ExtensionHost, queue: str, campaign_id: str) -> list[str]:
    queue_keys = app.key_space.queue(queue)
    record = queue_keys.campaign(campaign_id)
    return [*queue_keys.script_keys, record.record, record.pending, record.held]


def _conflict(campaign_id: str, status: Any, action: str) -> CampaignConflictError:
    state = text(status) if status is not None else "unknown"
    why = {"scheduling": "still scheduling (wait for schedule() to finish)",
           "cancelled": "cancelled"}.get(state, state)
    return CampaignConflictError(f"campaign {campaign_id!r} cannot be {action}: it is {why}")


async def pause(app: ExtensionHost, queue: str, campaign_id: str, now_ms: int) -> int:
    """Hold the campaign's messages not released yet; returns how many (0: was paused)."""
    held, detail = await app.broker.call(_PAUSE, _keys(app, queue, campaign_id), [now_ms])
    if held == -1:
        raise CampaignNotFoundError(campaign_id)
    if held == -2:
        raise _conflict(campaign_id, detail, "paused")
    return int(held)


async def resume(app: ExtensionHost, queue: str, campaign_id: str, now_ms: int) -> int:
    """Release the held messages again, due times shifted by the pause; returns how many."""
    back, _shift = await app.broker.call(_RESUME, _keys(app, queue, campaign_id), [now_ms])
    if back == -1:
        raise CampaignNotFoundError(campaign_id)
    return int(back)


async def update(app: ExtensionHost, queue: str, campaign_id: str, now: datetime,
                 changes: dict[str, Any]) -> None:
    """Apply ``changes`` (only the fields in ``UPDATABLE``); see the module docstring."""
    for name in changes:
        if name not in UPDATABLE:
            raise ValidationError(name, "cannot be changed once a campaign is scheduled; "
                                  f"updatable: {', '.join(UPDATABLE)}")
    if not changes:
        raise ValidationError("changes", f"give at least one of {', '.join(UPDATABLE)}")
    progress = await read_progress(app, queue, campaign_id)
    if progress.status != "scheduled":
        raise _conflict(campaign_id, progress.status, "updated")
    client = app.broker.client
    spec: dict[str, Any] = orjson.loads(
        await client.hget(app.key_space.queue(queue).campaign(campaign_id).record, "spec"))
    calls: list[list[Any]] = []
    if "at" in changes:
        at = changes["at"]
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise ValidationError("at", "must be a timezone-aware datetime")
        if spec["at"] is None:
            raise ValidationError("at", "only a campaign sent at one instant (at=) can be "
                                  "moved; this one goes out at each recipient's local time")
        if epoch_ms(at) < epoch_ms(now):
            raise ValidationError("at", "must not be in the past")
        delta, spec["at"] = epoch_ms(at) - spec["at"], epoch_ms(at)
        calls.append(["shift", delta, 0])
    if "throttle_per_minute" in changes:
        rate = changes["throttle_per_minute"]
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 10**9:
            raise ValidationError("throttle_per_minute", "must be an integer from 1 to 10**9")
        if spec["at"] is None:
            raise ValidationError("throttle_per_minute", "can be changed only for a campaign "
                                  "sent at one instant (at=)")
        spec["throttle_per_minute"] = rate
        calls.append(["space", _MINUTE_MS / rate, max(spec["at"], epoch_ms(now))])
    spec_json = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    for mode, amount, anchor in calls:
        result = await app.broker.call(_RETIME, _keys(app, queue, campaign_id),
                                       [mode, amount, anchor, spec_json])
        if result[0] == -1:
            raise CampaignNotFoundError(campaign_id)
        if result[0] == -2:
            raise _conflict(campaign_id, result[1], "updated")
        if result[0] == -3:
            raise CampaignConflictError(f"campaign {campaign_id!r}: at cannot be changed "
                                        "once messages were released")


async def delete(app: ExtensionHost, queue: str, campaign_id: str) -> None:
    """Remove a finished or cancelled campaign's keys (its registry entry is the caller's)."""
    progress = await read_progress(app, queue, campaign_id)  # counts the last releases
    record = app.key_space.queue(queue).campaign(campaign_id)
    done = await app.broker.call(_DELETE, [record.record, record.pending, record.slots,
                                           record.held], [])
    if done == -1:
        raise CampaignNotFoundError(campaign_id)
    if done == 0:
        state = "paused" if progress.paused else progress.status
        raise CampaignConflictError(
            f"campaign {campaign_id!r} cannot be deleted: it is {state} with "
            f"{progress.pending} messages not released yet (cancel it first)")
