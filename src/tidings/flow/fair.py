"""Tenant fairness within a queue's lanes: one tenant's flood does not delay the others.

::

    fair = app.flow.fair(email)                     # per queue, by tenant
    await fair.publish({"to": "a@b.c"}, tenant="acme", priority="high")

Messages published through ``fair`` wait in a line per (lane, tenant) instead of going
straight into the lane. Just before each fetch, a worker's fetch gate moves as many as it
is about to take into the lanes, round robin over the tenants waiting in each lane
(``quantum`` messages per turn), and only tops the lanes up to what it will fetch. So the
lanes stay short: a tenant sending one message a second meets at most one turn of each
other tenant, not a backlog of 100,000 messages. Lane weights still apply between lanes.

Everything after the lane is the ordinary queue: leases, retries (a retried message goes
back through the delayed set, not through the tenant line), dead letters, the other flow
controls. Held messages are not in ``queue.inspect`` until fed; delays, idempotency keys
and expiry by TTL are not available on the fair path (publish those normally).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..core.clock import now_ms
from ..core.errors import PayloadError, ValidationError
from ..core.ids import new_message_id
from ..core.keys import GROUP
from ..core.message import Message, Priority, duration_ms, encode, validate_headers
from ..engine.scripts import LIBRARY
from ..worker.allocation import LaneAllocator
from ._guard import GATE_FAIR, Guard

if TYPE_CHECKING:
    from ..queues.queue import Queue
    from .control import FlowControl

_PUBLISH = LIBRARY["fair_publish"]
_FEED = LIBRARY["fair_feed"]


@dataclass(slots=True)
class FairMessage:
    """One message for :meth:`FairQueue.publish_many`."""

    payload: Any
    tenant: str
    priority: Priority | str = Priority.NORMAL
    headers: dict[str, str] | None = None
    expires_in: timedelta | float | None = None


class FairQueue(Guard):
    """The fair front of one queue; create it with ``app.flow.fair(queue)``."""

    gate_stage = GATE_FAIR

    def __init__(self, flow: FlowControl, queue: Queue, *, quantum: int = 1) -> None:
        if quantum < 1:
            raise ValidationError("quantum", "must be >= 1")
        self.flow = flow
        self.queue = queue
        self.quantum = quantum
        self.ready_keys = [queue.keys.fair_ready(lane) for lane in range(3)]
        self.line_prefixes = [queue.keys.fair_line_prefix(lane) for lane in range(3)]
        self._allocator = LaneAllocator(queue.config.weights)

    async def publish(self, payload: Any, *, tenant: str,
                      priority: Priority | str = Priority.NORMAL,
                      headers: dict[str, str] | None = None,
                      expires_in: timedelta | float | None = None) -> str:
        """Publish one message on behalf of ``tenant``; returns its id."""
        item = FairMessage(payload, tenant, priority, headers, expires_in)
        return (await self.publish_many([item]))[0]

    async def publish_many(self, items: Iterable[FairMessage]) -> list[str]:
        """Publish many, one round trip per 1000 (each chunk atomic)."""
        ids: list[str] = []
        chunk: list[FairMessage] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= 1000:
                ids += await self._publish(chunk)
                chunk = []
        if chunk:
            ids += await self._publish(chunk)
        return ids

    async def _publish(self, items: list[FairMessage]) -> list[str]:
        app = self.queue.app
        if not app.broker.connected:
            await app.connect()
        created = now_ms(app.clock)
        keys: list[str] = [*self.queue.keys.script_keys, *self.ready_keys]
        args: list[Any] = []
        ids = []
        chain = app.middleware
        for item in items:
            if not isinstance(item.tenant, str) or not 0 < len(item.tenant) <= 256:
                raise ValidationError("tenant", "must be a non-empty string of <= 256 chars")
            lane = Priority.parse(item.priority)
            expires = (None if item.expires_in is None
                       else created + duration_ms(item.expires_in, "expires_in"))
            msg_id = new_message_id(created)
            message = Message(msg_id, self.queue.name, item.payload,
                              validate_headers(item.headers), lane, None, 0, created, None,
                              expires)
            if chain.publishing:
                chain.before_publish(self.queue.name, message)
            raw = encode(message)
            if len(raw) > self.queue.config.max_payload_bytes:
                raise PayloadError("payload", f"encoded message is {len(raw)} bytes")
            line = self.line_prefixes[lane] + item.tenant
            if line not in keys:
                keys.append(line)
            args += (keys.index(line) + 1, item.tenant, int(lane),
                     "" if expires is None else expires, msg_id.encode() + b"|" + raw)
            ids.append(msg_id)
        config = self.queue.config
        await app.broker.publish(self.queue.name, (_PUBLISH, keys, args), config.durability,
                                 config.durability_timeout, ids)
        if chain.active:
            for msg_id, item in zip(ids, items, strict=True):
                chain.emit_published(self.queue.name, msg_id, Priority.parse(item.priority),
                                     item.headers)
        return ids

    async def admit(self, queue: Queue, free: int) -> int:
        """Feed up to ``free`` held messages into the lanes; fetch what the lanes hold.

        Fetching exactly what is there keeps the worker from blocking on the lanes (it
        blocks after a fetch that came back short) while tenant lines still hold work.
        With nothing anywhere the fetch may block: a fair publish wakes it.
        """
        _moved, ready, _held = await _FEED(
            queue.app.broker.client, [*queue.keys.script_keys, *self.ready_keys],
            [GROUP, *self.line_prefixes, *self._allocator.split(free), free, self.quantum])
        return min(free, int(ready)) if int(ready) > 0 else free

    async def held(self) -> int:
        """Messages waiting in tenant lines, not yet in the lanes."""
        value = await self.queue.app.broker.client.hget(self.queue.keys.stats, "fair_held")
        return int(value or 0)
