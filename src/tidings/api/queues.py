"""Queues and their messages: list, detail, weights, pause and resume; inspect a message,
cancel or reschedule a delayed one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..core.errors import MessageNotFoundError
from ..core.keys import LANE_NAMES
from ..queues.queue import Queue
from ..queues.views import view_of
from ..worker.allocation import parse_weights
from .common import Caller, aware, doc, queue_of
from .models import (
    PauseIn,
    PauseOut,
    QueueDetailOut,
    QueueOut,
    RescheduleIn,
    RescheduleOut,
    WeightsIn,
)

router = APIRouter(tags=["queues"])


async def _summary(q: Queue, access: Caller) -> dict[str, Any]:
    s = await q.stats()
    state = await access.app.flow.pause_state(q)
    return {"name": s.name, "lanes": s.lanes, "depth": s.depth, "in_flight": s.in_flight,
            "delayed": s.delayed, "dead": s.dead, "oldest_age": s.oldest_age,
            "consumers": s.consumers, "paused": state.paused, "counters": s.counters,
            "paused_keys": state.keys}


@router.get("/queues", **doc(list[QueueOut]))
async def list_queues(access: Caller) -> list[dict[str, Any]]:
    """Every queue the caller may inspect (``queue:inspect:<queue>``): depth per lane,
    in flight, delayed, dead letters, oldest age, consumers, paused."""
    out = []
    for name in await access.app.queue_names():
        if access.allows(f"queue:inspect:{name}"):
            row = await _summary(await queue_of(access, name), access)
            row.pop("paused_keys")
            out.append(row)
    return out


@router.get("/queues/{queue}", **doc(QueueDetailOut))
async def show_queue(queue: str, access: Caller) -> dict[str, Any]:
    """One queue: its figures, current lane weights, paused keys and main settings."""
    access.require(f"queue:inspect:{queue}")
    q = await queue_of(access, queue)
    row = await _summary(q, access)
    stored = await access.app.broker.client.hget(q.keys.config, "weights")
    weights = parse_weights(stored) or q.config.weights
    return {**row, "weights": dict(zip(LANE_NAMES, weights, strict=True)),
            "visibility_timeout": q.config.visibility_timeout,
            "max_depth": q.config.max_depth, "encryption": q.config.encryption}


@router.put("/queues/{queue}/weights", **doc(WeightsIn))
async def set_weights(queue: str, body: WeightsIn, access: Caller) -> dict[str, int]:
    """Change the lane weights of every running worker, without a restart."""
    q = await queue_of(access, queue)
    async with access.change(f"queue:weights:{queue}", "queue.weights", queue,
                             high=body.high, normal=body.normal, low=body.low):
        await q.set_weights(body.high, body.normal, body.low)
    return body.model_dump()


@router.post("/queues/{queue}/pause", **doc(PauseOut))
async def pause(queue: str, access: Caller,
                body: PauseIn | None = None) -> dict[str, Any]:
    """Stop every worker from taking the queue's messages (or one key's)."""
    q, body = await queue_of(access, queue), body or PauseIn()
    async with access.change(f"queue:pause:{queue}", "queue.pause", queue, key=body.key):
        await access.app.flow.pause(q, body.key)
    return {"queue": q.name, "paused": True, "key": body.key, "released": 0}


@router.post("/queues/{queue}/resume", **doc(PauseOut))
async def resume(queue: str, access: Caller,
                 body: PauseIn | None = None) -> dict[str, Any]:
    """Undo a pause; a key's parked messages become due at once."""
    q, body = await queue_of(access, queue), body or PauseIn()
    async with access.change(f"queue:pause:{queue}", "queue.resume", queue, key=body.key):
        moved = await access.app.flow.resume(q, body.key)
    return {"queue": q.name, "paused": False, "key": body.key, "released": moved}


async def _history(access: Caller, message_id: str) -> list[dict[str, Any]] | None:
    ledger = access.app.ledger
    if not ledger.configured:
        return None
    return [t.as_dict() for t in await ledger.trace(message_id)]


async def _settled(access: Caller, message_id: str, queue: str | None) -> dict[str, Any]:
    """A message Redis no longer holds (acked, expired, purged), as the ledger recorded
    it; MessageNotFoundError without a ledger or a record."""
    history = await _history(access, message_id) or []
    found = [t for t in history if queue is None or t["queue"] == queue]
    if found and access.allows(f"queue:inspect:{found[0]['queue']}"):
        last = found[0]
        return {"id": message_id, "queue": last["queue"], "state": last["state"],
                "priority": last["priority"], "attempts": last["attempts"],
                "payload": last["payload"], "history": found}
    where = f"queue {queue!r}" if queue else "any queue you may inspect"
    raise MessageNotFoundError(f"no message {message_id!r} in {where}")


@router.get("/queues/{queue}/messages/{message_id}", **doc())
async def inspect_message(queue: str, message_id: str, access: Caller) -> dict[str, Any]:
    """Where the message is (queued, in_flight, delayed, dead) and what it holds (not an
    encrypted payload); ``history`` from the ledger when one is configured, which also
    answers for a message Redis no longer holds (acked, expired)."""
    access.require(f"queue:inspect:{queue}")
    view = await view_of(await queue_of(access, queue), message_id)
    if view is None:
        return await _settled(access, message_id, queue)
    return {**view, "history": await _history(access, message_id)}


@router.get("/messages/{message_id}", **doc())
async def find_message(message_id: str, access: Caller) -> dict[str, Any]:
    """The message in whichever queue the caller may inspect holds it."""
    for name in await access.app.queue_names():
        if access.allows(f"queue:inspect:{name}"):
            view = await view_of(await queue_of(access, name), message_id)
            if view is not None:
                return {**view, "history": await _history(access, message_id)}
    return await _settled(access, message_id, None)


@router.delete("/queues/{queue}/delayed/{message_id}", **doc())
async def cancel_delayed(queue: str, message_id: str, access: Caller) -> dict[str, Any]:
    """Cancel a delayed message (404 if it is not waiting in the delayed set)."""
    q = await queue_of(access, queue)
    async with access.change(f"queue:delayed:{queue}", "delayed.cancel", queue,
                             message=message_id):
        cancelled = await q.cancel(message_id)
    if not cancelled:
        raise MessageNotFoundError(f"{message_id} is not waiting in {queue}'s delayed set")
    return {"id": message_id, "queue": q.name, "cancelled": True}


@router.post("/queues/{queue}/delayed/{message_id}/reschedule", **doc(RescheduleOut))
async def reschedule(queue: str, message_id: str, body: RescheduleIn,
                     access: Caller) -> dict[str, Any]:
    """Move a delayed message's due time (``delay`` seconds from now, or ``send_at``)."""
    q = await queue_of(access, queue)
    send_at = aware(body.send_at, body.zone, "send_at")
    async with access.change(f"queue:delayed:{queue}", "delayed.reschedule", queue,
                             message=message_id):
        due = await q.reschedule(message_id, delay=body.delay, send_at=send_at)
    return {"id": message_id, "queue": q.name, "due_at": due.isoformat()}
