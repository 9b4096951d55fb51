"""Routing the unrouted queue's dead letters again, under the rules in force now (after a
missing binding was added, or a broken transform fixed).

Each one is published to its topic again, with its headers and routing key, and its dead
letter deleted only after that publish returned. The publish's idempotency key derives
from the original message's id, so a run cut short and started again adds no second
copy: nothing is lost and nothing doubled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..queues import scripts
from .plan import ORIGIN_HEADER, ROUTING_KEY_HEADER, TOPIC_HEADER

if TYPE_CHECKING:
    from .topics import Topics


@dataclass(frozen=True, slots=True)
class Rerouted:
    """What a reroute did: ``routed`` reached a queue now, ``unrouted`` were dead-lettered
    again (still no binding, or the transform still fails), ``skipped`` could not be read
    as a topic message and stay where they are."""

    routed: int = 0
    unrouted: int = 0
    skipped: int = 0


async def reroute_unrouted(topics: Topics, limit: int = 1000) -> Rerouted:
    """Route up to ``limit`` dead letters of the unrouted queue again, oldest first."""
    rules = await topics.start()
    queue = topics._target(rules.unrouted_queue)
    routed = unrouted = skipped = 0
    for entry in await queue.dlq.list(limit):
        message = entry.message
        topic = None if message is None else message.headers.get(TOPIC_HEADER)
        if message is None or topic is None:
            skipped += 1
            continue
        headers = {k: v for k, v in message.headers.items() if not k.startswith("tidings-")}
        origin = message.headers.get(ORIGIN_HEADER, message.id)
        headers.setdefault("correlation_id", origin)  # the copies still name the original
        result = await topics.publish(
            topic, message.payload, headers=headers, priority=message.priority,
            routing_key=message.headers.get(ROUTING_KEY_HEADER),
            idempotency_key=f"reroute:{origin}")
        if result.deliveries:
            routed += 1
        else:
            unrouted += 1
        await topics.app.broker.run(scripts.dlq_purge(queue.keys, [entry.entry_id]))
    return Rerouted(routed, unrouted, skipped)
