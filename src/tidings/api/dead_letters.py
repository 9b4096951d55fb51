"""Dead letters: list with filters, show one, replay (rate-limited) and purge."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from ..core.errors import MessageNotFoundError, ValidationError
from ..queues.dead_letters import Filter, make_filter
from ..queues.views import dead_letter_view
from .common import Caller, doc, queue_of
from .models import CountOut, ReplayIn, SelectionIn

router = APIRouter(tags=["dead letters"])


def _filter(body: SelectionIn) -> tuple[list[str] | None, Filter | None]:
    """The ids and the filter of a selection; refused when it selects nothing explicitly
    (``all`` must be said: an empty body never replays or purges everything)."""
    where = make_filter(body.reason, body.error_type, body.before, body.after)
    if not (body.ids or where is not None or body.all):
        raise ValidationError("ids", "give ids, reason, error_type, before, after or all=true")
    return body.ids or None, where


@router.get("/queues/{queue}/dead-letters", **doc())
async def list_dead_letters(
    queue: str, access: Caller, limit: int = Query(50, ge=1, le=1000),
    reason: str | None = None, error_type: str | None = None,
    before: datetime | None = None, after: datetime | None = None,
) -> list[dict[str, Any]]:
    """Dead letters oldest first, with reason, error (type, message, traceback) and
    attempts; filtered by reason, error type and dead-letter time."""
    access.require(f"dlq:read:{queue}")
    q = await queue_of(access, queue)
    items = await q.dlq.list(limit, make_filter(reason, error_type, before, after))
    return [dead_letter_view(item, q.name) for item in items]


@router.get("/queues/{queue}/dead-letters/{message_id}", **doc())
async def show_dead_letter(queue: str, message_id: str, access: Caller) -> dict[str, Any]:
    """One dead letter, with its error and traceback."""
    access.require(f"dlq:read:{queue}")
    q = await queue_of(access, queue)
    item = await q.dlq.get(message_id)
    if item is None:
        raise MessageNotFoundError(f"no dead letter {message_id!r} in queue {queue!r}")
    return dead_letter_view(item, q.name)


@router.post("/queues/{queue}/dead-letters/replay", **doc(CountOut))
async def replay(queue: str, body: ReplayIn, access: Caller) -> dict[str, Any]:
    """Replay dead letters (by ids, filter or all) with fresh attempts, at most ``rate``
    a second (default ``TIDINGS_API__REPLAY_RATE``); returns when done."""
    q = await queue_of(access, queue)
    ids, where = _filter(body)
    rate = body.rate if body.rate is not None else access.app.settings.api.replay_rate
    async with access.change(f"dlq:replay:{queue}", "dlq.replay", queue) as operation:
        done = await q.dlq.replay(ids, where=where, rate=rate)
        operation.detail["count"] = int(done)
    return {"queue": q.name, "count": int(done),
            "skipped": [dataclasses.asdict(s) for s in done.skipped]}


@router.post("/queues/{queue}/dead-letters/purge", **doc(CountOut))
async def purge(queue: str, body: SelectionIn, access: Caller) -> dict[str, Any]:
    """Delete dead letters for good (by ids, filter or all)."""
    q = await queue_of(access, queue)
    ids, where = _filter(body)
    async with access.change(f"dlq:purge:{queue}", "dlq.purge", queue) as operation:
        count = await q.dlq.purge(ids, where=where)
        operation.detail["count"] = count
    return {"queue": q.name, "count": count, "skipped": []}
