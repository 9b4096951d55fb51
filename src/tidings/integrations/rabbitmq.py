"""A bridge between tidings and RabbitMQ (aio-pika), in both directions, at least once.

* :class:`RabbitPublisher` is a tidings handler: it publishes each message to RabbitMQ on a
  channel with publisher confirms and returns (so tidings acks) only after the broker
  confirmed it; a refusal, an unroutable message, a lost connection or a confirm timeout
  raises, and the message goes through the queue's retry policy (then its dead letters).
* :class:`RabbitConsumer` consumes a RabbitMQ queue with manual acks and acks each message
  only after tidings stored it; the AMQP ``message_id`` becomes the idempotency key, so a
  redelivered message is not enqueued twice (within the tidings queue's dedupe window).

Install with ``pip install 'tidings[rabbitmq]'``::

    publisher = RabbitPublisher(RabbitPublishConfig(routing_key="notifications"))
    app.queue("to-rabbit").handler(publisher.handle)
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    DeliveryMode,
)

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, ValidationError
from ..core.message import Message, Priority
from .counted import Counted
from .mapping import (
    decode_payload,
    encode_payload,
    incoming_headers,
    outgoing_headers,
    priority_from_header,
    require_positive,
    require_text,
)

if TYPE_CHECKING:
    from ..queues.queue import Queue

log = logging.getLogger("tidings.integrations.rabbitmq")
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
# AMQP priorities are 0-9 (a queue declared with x-max-priority honours them).
AMQP_PRIORITY = {Priority.HIGH: 9, Priority.NORMAL: 5, Priority.LOW: 1}


def _check_url(value: Any) -> str:
    url = require_text("url", value)
    if urlsplit(url).scheme not in ("amqp", "amqps"):
        raise ConfigError("url", "must be an amqp:// or amqps:// URL")
    return url


def safe_url(url: str) -> str:
    """``url`` with its password masked, for logs and reprs (secrets are never logged)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@dataclass(frozen=True, slots=True)
class RabbitPublishConfig:
    """Where :class:`RabbitPublisher` sends: ``exchange`` ("" is the default exchange,
    which routes to the queue named ``routing_key``), with confirms awaited for at most
    ``confirm_timeout`` seconds; ``persistent`` messages survive a broker restart."""

    routing_key: str
    exchange: str = ""
    url: str = field(default=DEFAULT_URL, repr=False)
    confirm_timeout: float = 10.0
    persistent: bool = True

    def __post_init__(self) -> None:
        _check_url(self.url)
        require_text("routing_key", self.routing_key)
        require_text("exchange", self.exchange, allow_empty=True)
        require_positive("confirm_timeout", self.confirm_timeout)
        if not isinstance(self.persistent, bool):
            raise ConfigError("persistent", f"must be a bool, got {self.persistent!r}")


@dataclass(frozen=True, slots=True)
class RabbitConsumeConfig:
    """What :class:`RabbitConsumer` reads: the RabbitMQ ``queue`` (which must exist),
    ``prefetch`` unacked messages at a time. A message tidings could not store is handed
    back (nack, requeue) after ``requeue_delay`` seconds, so an outage does not spin."""

    queue: str
    url: str = field(default=DEFAULT_URL, repr=False)
    prefetch: int = 64
    requeue_delay: float = 1.0
    key_prefix: str = "amqp:"

    def __post_init__(self) -> None:
        _check_url(self.url)
        require_text("queue", self.queue)
        require_positive("prefetch", self.prefetch, integer=True)
        require_positive("requeue_delay", self.requeue_delay)
        require_text("key_prefix", self.key_prefix, allow_empty=True)


class _Connected:
    """One robust connection and confirming channel, opened on first use."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = asyncio.Lock()
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractRobustChannel | None = None

    async def open(self) -> AbstractRobustChannel:
        if self.channel is not None and not self.channel.is_closed:
            return self.channel
        async with self._lock:
            if self.connection is None or self.connection.is_closed:
                self.connection = await aio_pika.connect_robust(self._url)
            if self.channel is None or self.channel.is_closed:
                # on_return_raises: an unroutable message is an error, not a silent drop.
                self.channel = await self.connection.channel(
                    publisher_confirms=True, on_return_raises=True)
            return self.channel

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        self.connection = self.channel = None


class RabbitPublisher:
    """A tidings handler that forwards each message to RabbitMQ (register
    ``queue.handler(publisher.handle)``); ``await publisher.close()`` when done."""

    def __init__(self, config: RabbitPublishConfig) -> None:
        self.config = config
        self._conn = _Connected(config.url)

    def __repr__(self) -> str:
        return f"<RabbitPublisher {safe_url(self.config.url)} {self.config.routing_key!r}>"

    async def handle(self, message: Message) -> None:
        """Publish ``message`` to RabbitMQ; returns once the broker confirmed it."""
        channel = await self._conn.open()
        cfg = self.config
        exchange = (channel.default_exchange if not cfg.exchange
                    else await channel.get_exchange(cfg.exchange, ensure=False))
        await exchange.publish(to_amqp(message, persistent=cfg.persistent),
                               routing_key=cfg.routing_key, mandatory=True,
                               timeout=cfg.confirm_timeout)

    async def close(self) -> None:
        await self._conn.close()


def to_amqp(message: Message, *, persistent: bool = True) -> aio_pika.Message:
    """``message`` as an AMQP message: id, correlation id, headers, priority, body."""
    body = encode_payload(message.payload)
    return aio_pika.Message(
        body.data, content_type=body.content_type, message_id=message.id,
        correlation_id=message.correlation_id, headers=dict(outgoing_headers(message)),
        priority=AMQP_PRIORITY[message.priority],
        delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT)


class RabbitConsumer(Counted):
    """Moves messages from a RabbitMQ queue into the tidings ``target`` queue.

    ``await consumer.run()`` until cancelled or :meth:`stop`. Each message is acked only
    after tidings stored it; one that can never be stored (not valid JSON, too large) is
    rejected without requeue (to the RabbitMQ queue's dead-letter exchange, if it has one),
    with the reason logged.
    """

    def __init__(self, config: RabbitConsumeConfig, target: Queue, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.config = config
        self.target = target
        self.clock = clock
        self._conn = _Connected(config.url)

    def __repr__(self) -> str:
        return f"<RabbitConsumer {safe_url(self.config.url)} {self.config.queue!r}>"

    async def run(self) -> None:
        channel = await self._conn.open()
        await channel.set_qos(prefetch_count=self.config.prefetch)
        source = await channel.get_queue(self.config.queue, ensure=True)
        tag = await source.consume(self.handle)
        try:
            await self._stopped.wait()
        finally:
            try:
                await source.cancel(tag)
            finally:
                await self._conn.close()

    async def handle(self, incoming: AbstractIncomingMessage) -> None:
        """Store one RabbitMQ message in tidings, then ack it (never before)."""
        try:
            payload = decode_payload(incoming.body, incoming.content_type)
            headers = incoming_headers(incoming.headers)
            if incoming.correlation_id:
                headers.setdefault("correlation_id", incoming.correlation_id)
            key = (None if not incoming.message_id
                   else f"{self.config.key_prefix}{incoming.message_id}")
            await self.target.publish(payload, idempotency_key=key, headers=headers,
                                      priority=priority_from_header(incoming.headers))
        except ValidationError as exc:  # can never succeed: reject, do not loop on it
            log.warning("rejected RabbitMQ message %s from %r: %s", incoming.message_id,
                        self.config.queue, exc)
            await incoming.reject(requeue=False)
            self._count("rejected")
            return
        except Exception as exc:  # the server is away or full: hand it back, later
            log.warning("tidings did not store RabbitMQ message %s (%s); requeued",
                        incoming.message_id, exc)
            await self.clock.sleep(self.config.requeue_delay)
            await incoming.nack(requeue=True)
            self._count("requeued")
            return
        await incoming.ack()
        self._count("moved")
