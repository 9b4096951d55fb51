"""Deleting a queue: its messages, counters, settings and its entry in the queue registry.

Used by :meth:`Queue.delete`, :meth:`Tidings.delete_queue` and ``tidings queue delete``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.errors import QueueNotEmptyError
from ..core.progress import ProgressCallback
from ..core.stored import text
from . import scripts

if TYPE_CHECKING:
    from .queue import Queue


async def delete_queue(queue: Queue, *, force: bool = False,
                       progress: ProgressCallback | None = None) -> int:
    """Delete ``queue`` and everything under its keys; returns how many keys went.

    Refuses (:class:`QueueNotEmptyError`) a queue that still holds messages or that a
    worker heartbeated on within its visibility timeout, unless ``force``. The check and
    the deletion of its lanes, delayed set and dead letters are one atomic script; its
    other keys (idempotency keys, paused keys, campaigns) are deleted after it.
    """
    app = queue.app
    if not app.broker.connected:
        await app.connect()
    client: Any = app.broker.client
    vt_ms = int(queue.config.visibility_timeout * 1000)
    deleted, held, live = await app.broker.run(scripts.queue_delete(
        queue.keys, force=force, visibility_timeout_ms=vt_ms))
    if not deleted:
        raise QueueNotEmptyError(queue.name, int(held), int(live))
    space = app.key_space
    count = len(queue.keys.script_keys)
    batch: list[Any] = []
    # Names and prefixes hold no glob characters (their patterns forbid them).
    async for key in client.scan_iter(match=f"{queue.keys.tag}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            count += len(batch)
            await client.delete(*batch)
            batch = []
            if progress is not None:
                progress(count, None)
    if batch:
        count += len(batch)
        await client.delete(*batch)
    await client.srem(space.queue_registry, queue.name)
    campaigns = space.campaign_registry
    stale = [k for k, v in (await client.hgetall(campaigns)).items() if text(v) == queue.name]
    if stale:
        await client.hdel(campaigns, *stale)
    if progress is not None:
        progress(count, count)
    return count
