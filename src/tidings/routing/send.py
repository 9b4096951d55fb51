"""A route plan as one ``route.lua`` call: the copies grouped by queue (each group is what
``publish.lua`` would take for that queue), what could not be routed as dead letters of
the unrouted queue, the counters, and the rule set version checked on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..core.config import Durability
from ..core.errors import QueueFullError
from ..core.ids import new_message_id
from ..core.keys import RouteKeys
from ..core.message import Message, Priority, encode
from ..engine.memory import RETRY_AFTER_FULL
from ..engine.scripts import LIBRARY, Arg, ScriptCall
from ..queues.queue import Outgoing, Queue
from ..queues.scripts import PublishBatch
from .plan import (
    BINDING_HEADER,
    ORIGIN_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    RULES_HEADER,
    TOPIC_HEADER,
    RoutePlan,
)

if TYPE_CHECKING:
    from collections.abc import Callable

ROUTE = LIBRARY["route"]
STALE, FULL = -2, -1
_STRENGTH = {Durability.MEMORY: 0, Durability.DISK: 1, Durability.REPLICATED: 2}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One copy: the binding that made it, its queue, its id (the first copy's id when it
    was a duplicate), and whether it was new."""

    binding: str | None
    queue: str
    message_id: str
    new: bool
    reason: str | None = None  # dead-lettered copies: "unrouted" | "transform_failed"
    error: str | None = None


# One copy as sent: binding, queue, message id, and (dead letters) reason and error.
Sent = tuple[str | None, str, str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Origin:
    """The published message, as every copy's headers name it."""

    message_id: str
    topic: str
    payload: Any
    routing_key: str | None
    headers: dict[str, str]
    priority: Priority
    delay: float | None
    send_at: datetime | None
    expires_in: float | None
    created: int


class RouteCall:
    """Builds the KEYS and ARGV of one route.lua call, and reads its reply."""

    def __init__(self, keys: RouteKeys, plan: RoutePlan, origin: Origin,
                 target: Callable[[str], Queue], unrouted: Queue) -> None:
        self.plan, self.origin = plan, origin
        self.keys: list[str] = [keys.version, keys.stats]
        counters = plan.counters()
        self.args: list[Arg] = [plan.version, 0, len(counters)]
        for name, count in counters.items():
            self.args += (name, count)
        self.groups: list[tuple[Queue, list[Sent]]] = []
        self.durability = Durability.MEMORY
        self.timeout = 0.0
        batches: dict[str, tuple[Queue, PublishBatch, list[Sent]]] = {}
        for planned in plan.copies:
            binding = planned.binding.binding
            queue = target(binding.queue)
            if queue.name not in batches:
                config = queue.config
                batches[queue.name] = (queue, PublishBatch(
                    queue.keys, int(config.dedupe_window * 1000), config.depth_limits()), [])
            _, batch, made = batches[queue.name]
            msg_id = queue._prepare(self._outgoing(planned.payload, planned.idempotency_key,
                                                   binding), origin.created, batch)
            made.append((binding.name, queue.name, msg_id, None, None))
        for queue, batch, made in batches.values():
            self._add_group("p", queue, batch.keys, batch.args[:3], len(made), batch.args[3:])
            self.groups.append((queue, made))
        if plan.failures:
            self._add_failures(unrouted)

    def _outgoing(self, payload: Any, key: str, binding: Any) -> Outgoing:
        origin = self.origin
        headers = {**origin.headers, TOPIC_HEADER: origin.topic, ORIGIN_HEADER: origin.message_id,
                   BINDING_HEADER: binding.name, RULES_HEADER: str(self.plan.version)}
        headers.setdefault("correlation_id", origin.message_id)
        if origin.routing_key is not None:
            headers[ROUTING_KEY_HEADER] = origin.routing_key
        # A binding's delay counts from the publish; else the publish's own time stands.
        delay, send_at = ((binding.delay, None) if binding.delay is not None
                          else (origin.delay, origin.send_at))
        return Outgoing(payload, binding.priority or origin.priority, key, headers, delay,
                        send_at, binding.ttl if binding.ttl is not None else origin.expires_in)

    def _add_group(self, mode: str, queue: Queue, keys: list[str], head: list[Arg], count: int,
                   body: list[Arg]) -> None:
        self.keys += keys
        self.args += (mode, len(keys), *head, count, *body)
        self.args[1] = int(self.args[1]) + 1
        config = queue.config
        if _STRENGTH[config.durability] > _STRENGTH[self.durability]:
            self.durability = config.durability
        self.timeout = max(self.timeout, config.durability_timeout)

    def _add_failures(self, unrouted: Queue) -> None:
        """What could not be routed: a dead letter of the unrouted queue each, with the
        published payload and its reason (visible in ``tidings dlq list``)."""
        origin = self.origin
        keys = list(unrouted.keys.script_keys)
        body: list[Arg] = []
        made: list[Sent] = []
        for failure in self.plan.failures:
            headers = {**origin.headers, TOPIC_HEADER: origin.topic,
                       ORIGIN_HEADER: origin.message_id, RULES_HEADER: str(self.plan.version),
                       REASON_HEADER: failure.reason}
            if failure.binding is not None:
                headers[BINDING_HEADER] = failure.binding
            if origin.routing_key is not None:
                headers[ROUTING_KEY_HEADER] = origin.routing_key
            msg_id = new_message_id(origin.created)
            envelope = encode(Message(msg_id, unrouted.name, origin.payload, headers,
                                      origin.priority, failure.idempotency_key, 0,
                                      origin.created))
            keys.append(unrouted.keys.idempotency(failure.idempotency_key))
            error = orjson.dumps({"type": "TransformError" if failure.binding else "Unrouted",
                                  "message": failure.error})
            body += (msg_id, envelope, failure.reason, error, len(keys))
            made.append((failure.binding, unrouted.name, msg_id, failure.reason,
                         failure.error))
        self._add_group("d", unrouted, keys, [int(unrouted.config.dedupe_window * 1000)],
                        len(made), body)
        self.groups.append((unrouted, made))

    def call(self) -> ScriptCall:
        return ROUTE, self.keys, self.args

    def deliveries(self, reply: list[Any]) -> list[Delivery]:
        """Each copy as the server stored it (a duplicate names the first copy's id)."""
        if reply[0] == FULL:
            full = self.groups[int(reply[2]) - 1][0]
            raise QueueFullError(full.name, "max_depth", RETRY_AFTER_FULL,
                                 depth=int(reply[1]), limit=full.config.max_depth)
        out: list[Delivery] = []
        for (_, made), replies in zip(self.groups, reply[1], strict=True):
            for (binding, queue, _, reason, error), (stored_id, new) in zip(made, replies,
                                                                            strict=True):
                stored = stored_id.decode() if isinstance(stored_id, bytes) else str(stored_id)
                out.append(Delivery(binding, queue, stored, bool(new), reason, error))
        return out
