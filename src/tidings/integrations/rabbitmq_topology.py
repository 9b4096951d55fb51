"""Declaring the RabbitMQ side of a bridge from configuration: an exchange, a queue
(quorum by default), its bindings and a dead-letter exchange with its own queue.

Declaring is idempotent: run it at every bridge start (``tidings bridge rabbitmq-in
--declare``) or once from a deploy step. A queue that exists with other arguments is an
error from RabbitMQ (PRECONDITION_FAILED), reported with the queue's name, never changed.

Priorities: a classic queue honours AMQP priorities up to its ``max_priority``
(``x-max-priority``); a quorum queue takes no ``x-max-priority`` (RabbitMQ 4.0 gives
quorum queues two levels, normal and high, without it; 3.x quorum queues have none), so
asking for both is a configuration error. A quorum queue's ``delivery_limit`` sends a
message redelivered that many times to the dead-letter exchange (poison messages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika

from ..core.errors import ConfigError
from .mapping import require_positive, require_text
from .rabbitmq import DEFAULT_URL, _check_url

EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")
QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True, slots=True)
class RabbitTopology:
    """The exchange, queue and bindings a bridge uses. ``exchange`` "" is the default
    exchange (no binding needed: it routes by queue name). ``routing_keys`` default to the
    queue's name. ``dead_letter_exchange`` (a fanout) gets a queue ``QUEUE.dead``."""

    queue: str
    exchange: str = ""
    exchange_type: str = "direct"
    routing_keys: tuple[str, ...] = ()
    queue_type: str = "quorum"
    dead_letter_exchange: str | None = None
    max_priority: int | None = None
    delivery_limit: int | None = None
    url: str = field(default=DEFAULT_URL, repr=False)

    def __post_init__(self) -> None:
        _check_url(self.url)
        require_text("queue", self.queue)
        require_text("exchange", self.exchange, allow_empty=True)
        if self.exchange_type not in EXCHANGE_TYPES:
            raise ConfigError("exchange_type", f"must be one of {', '.join(EXCHANGE_TYPES)}")
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError("queue_type", f"must be one of {', '.join(QUEUE_TYPES)}")
        for key in self.routing_keys:
            require_text("routing_keys", key, allow_empty=True)
        if self.dead_letter_exchange is not None:
            require_text("dead_letter_exchange", self.dead_letter_exchange)
        if self.max_priority is not None:
            require_positive("max_priority", self.max_priority, integer=True)
            if self.max_priority > 255:
                raise ConfigError("max_priority", "must be at most 255 (AMQP priorities)")
            if self.queue_type == "quorum":
                raise ConfigError("max_priority", "a quorum queue takes no x-max-priority "
                                  "(use queue_type='classic' for AMQP priorities)")
        if self.delivery_limit is not None:
            require_positive("delivery_limit", self.delivery_limit, integer=True)
            if self.queue_type != "quorum":
                raise ConfigError("delivery_limit", "only a quorum queue has a delivery limit")

    def arguments(self) -> dict[str, Any]:
        """The queue's ``x-`` arguments."""
        args: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.dead_letter_exchange is not None:
            args["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
        if self.delivery_limit is not None:
            args["x-delivery-limit"] = self.delivery_limit
        return args


async def declare(topology: RabbitTopology) -> None:
    """Declare ``topology`` on the broker (durable; idempotent)."""
    connection = await aio_pika.connect(topology.url)
    try:
        channel = await connection.channel()
        if topology.dead_letter_exchange is not None:
            dlx = await channel.declare_exchange(topology.dead_letter_exchange,
                                                 aio_pika.ExchangeType.FANOUT, durable=True)
            dead = await channel.declare_queue(
                f"{topology.queue}.dead", durable=True,
                arguments={"x-queue-type": topology.queue_type})
            await dead.bind(dlx, routing_key="")
        queue = await channel.declare_queue(topology.queue, durable=True,
                                            arguments=topology.arguments())
        if topology.exchange:
            exchange = await channel.declare_exchange(
                topology.exchange, aio_pika.ExchangeType(topology.exchange_type), durable=True)
            for key in topology.routing_keys or (topology.queue,):
                await queue.bind(exchange, routing_key=key)
    finally:
        await connection.close()
