"""Deleting a queue: its messages, counters, settings and its entry in the queue registry.

Used by :meth:`Queue.delete`, :meth:`Tidings.delete_queue` and ``tidings queue delete``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..core.config import QUEUE_NAME_PATTERN
from ..core.errors import QueueNotEmptyError
from ..core.progress import ProgressCallback
from ..engine.broker import text
from ..engine.scripts import Script
from .queue import queue_keys

if TYPE_CHECKING:
    from ..app import Tidings
    from .queue import Queue

_DELETE = Script("queue_delete")


def registry_key(prefix: str) -> str:
    """The set of queue names that ``tidings queues`` lists (written at connect)."""
    return f"{prefix}:queues"


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
    deleted, held, live = await app.broker.call(_DELETE, queue.keys, [int(force), vt_ms])
    if not deleted:
        raise QueueNotEmptyError(queue.name, int(held), int(live))
    prefix = app.settings.key_prefix
    count = len(queue.keys)
    batch: list[Any] = []
    # Names and prefixes hold no glob characters (their patterns forbid them).
    async for key in client.scan_iter(match=f"{prefix}:{{{queue.name}}}:*", count=1000):
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
    await client.srem(registry_key(prefix), queue.name)
    campaigns = f"{prefix}:campaigns"
    stale = [k for k, v in (await client.hgetall(campaigns)).items() if text(v) == queue.name]
    if stale:
        await client.hdel(campaigns, *stale)
    if progress is not None:
        progress(count, count)
    return count


async def find_queue(app: Tidings, name: str) -> Queue | None:
    """The queue ``name`` if the app declares it or the server has it; None otherwise.

    Reads only: an unknown name leaves no trace on the server (the queue is declared on
    the app object when the server has it, after the app connected).
    """
    declared = app.queues.get(name)
    if declared is not None:
        return declared
    if not re.match(QUEUE_NAME_PATTERN, name):
        return None
    client: Any = app.broker.client
    if not await client.sismember(registry_key(app.settings.key_prefix), name):
        # Queues declared after their app connected are not in the registry: their keys
        # are the evidence.
        keys = queue_keys(app.settings.key_prefix, name)
        if not await client.exists(*keys[:6]):
            return None
    return app.queue(name)


async def known_queue_names(app: Tidings) -> set[str]:
    """Every queue name the registry has or the app declares (for suggestions)."""
    return set(await app.broker.queue_names()) | set(app.queues)


async def stored_ordered_names(app: Tidings) -> set[str]:
    """Ordered queues the app declares or the server has (read only)."""
    from ..ordering.queue import ordered_queues

    prefix = app.settings.key_prefix
    found = set(ordered_queues(app))
    async for key in app.broker.client.scan_iter(match=f"{prefix}:{{*#o}}:meta", count=1000):
        found.add(text(key)[len(prefix) + 2:-len("#o}:meta")])
    return found
