"""The queue registry: which queue names the server knows (for ``tidings queues``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.config import QUEUE_NAME_PATTERN
from ..core.keys import KeySpace
from ..core.stored import text
from ..engine.broker import Broker

if TYPE_CHECKING:
    from .queue import Queue


async def register(broker: Broker, key_space: KeySpace, queues: Sequence[Queue]) -> None:
    """Record the queues in the registry and create their consumer groups (at connect)."""
    if queues:
        await broker.client.sadd(key_space.queue_registry, *[q.name for q in queues])
    for queue in queues:
        await broker.ensure_groups(queue.keys.lanes)


async def registered_names(broker: Broker, key_space: KeySpace) -> list[str]:
    """Every queue name in the registry, sorted."""
    names = await broker.retrying(broker.client.smembers, key_space.queue_registry)
    return sorted(text(n) for n in names if text(n) != "_")


async def known_on_server(broker: Broker, key_space: KeySpace, name: str) -> bool:
    """True if the server has queue ``name``. Reads only: an unknown name leaves no trace."""
    if not re.match(QUEUE_NAME_PATTERN, name):
        return False
    client: Any = broker.client
    if await broker.retrying(client.sismember, key_space.queue_registry, name):
        return True
    # A queue declared after its app connected is not in the registry: its keys are the
    # evidence.
    keys = key_space.queue(name)
    return bool(await broker.retrying(client.exists, *keys.lanes, keys.delayed,
                                      keys.delayed_bodies, keys.dlq))
