"""A bridge between tidings and Kafka (aiokafka), in both directions, at least once.

* :class:`KafkaPublisher` is a tidings handler: it sends each message with ``acks=all``
  and returns (so tidings acks) only after the broker acknowledged the write. The Kafka key
  (which picks the partition, so it is the unit of ordering) is the header named by
  ``key_header``, by default the message's ``ordering_key``, else its ``correlation_id``,
  else none (spread over partitions). Any failure raises into the queue's retry policy.
* :class:`KafkaConsumer` reads a topic in a consumer group with auto-commit off, stores
  each batch in tidings with one ``publish_many`` and only then commits the offsets. The
  idempotency key is ``kafka:TOPIC:PARTITION:OFFSET``, which a re-read after a crash keeps,
  so what a dead bridge stored but had not committed is dropped as a duplicate. A broker
  that cannot be reached is waited for (``reconnect.keep_running``).

The idempotent producer (``enable_idempotence``) is off by default: Tansu, the broker the
tests run, does not answer ``InitProducerId``. A producer retry may then write a message
twice; both copies carry the same ``tidings-id`` header for the reader to drop.

Install with ``pip install 'tidings[kafka]'``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, ValidationError
from ..core.message import Message
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
from .reconnect import Attempts, keep_running

if TYPE_CHECKING:
    from ..queues.queue import Outgoing, Queue

log = logging.getLogger("tidings.integrations.kafka")
DEFAULT_SERVERS = "127.0.0.1:9092"
CONTENT_TYPE = "content-type"


def _check_servers(value: Any) -> str:
    servers = require_text("bootstrap_servers", value)
    if any(":" not in part for part in servers.split(",")):
        raise ConfigError("bootstrap_servers", "must be HOST:PORT[,HOST:PORT...]")
    return servers


@dataclass(frozen=True, slots=True)
class KafkaPublishConfig:
    """Where :class:`KafkaPublisher` sends: ``topic``; each write acknowledged by all
    in-sync replicas within ``send_timeout`` seconds. ``key_header`` names the header whose
    value is the Kafka key (None: ``ordering_key``, else ``correlation_id``)."""

    topic: str
    bootstrap_servers: str = DEFAULT_SERVERS
    key_header: str | None = None
    send_timeout: float = 30.0
    idempotent: bool = False
    linger_ms: int = 5

    def __post_init__(self) -> None:
        _check_servers(self.bootstrap_servers)
        require_text("topic", self.topic)
        if self.key_header is not None:
            require_text("key_header", self.key_header)
        require_positive("send_timeout", self.send_timeout)
        if not isinstance(self.idempotent, bool):
            raise ConfigError("idempotent", f"must be a bool, got {self.idempotent!r}")
        if isinstance(self.linger_ms, bool) or not isinstance(self.linger_ms, int) \
                or self.linger_ms < 0:
            raise ConfigError("linger_ms", f"must be an int >= 0, got {self.linger_ms!r}")


@dataclass(frozen=True, slots=True)
class KafkaConsumeConfig:
    """What :class:`KafkaConsumer` reads: ``topic`` in consumer group ``group``, up to
    ``batch`` records per poll (waiting at most ``poll_timeout`` seconds). A batch tidings
    could not store is read again after ``retry_delay`` seconds (the consumer seeks back).
    A new group starts at ``start`` ("earliest" or "latest"). A bridge that stops
    heartbeating for ``session_timeout`` seconds (it died) loses its partitions to another
    member; a short timeout also makes joining faster on Tansu, which holds a join for about
    that long."""

    topic: str
    group: str
    bootstrap_servers: str = DEFAULT_SERVERS
    batch: int = 500
    poll_timeout: float = 1.0
    retry_delay: float = 1.0
    start: str = "earliest"
    session_timeout: float = 10.0
    key_prefix: str = "kafka:"

    def __post_init__(self) -> None:
        _check_servers(self.bootstrap_servers)
        require_text("topic", self.topic)
        require_text("group", self.group)
        require_positive("session_timeout", self.session_timeout)
        require_positive("batch", self.batch, integer=True)
        require_positive("poll_timeout", self.poll_timeout)
        require_positive("retry_delay", self.retry_delay)
        if self.start not in ("earliest", "latest"):
            raise ConfigError("start", f"must be 'earliest' or 'latest', got {self.start!r}")
        require_text("key_prefix", self.key_prefix, allow_empty=True)


class KafkaPublisher:
    """A tidings handler forwarding each message to Kafka (register
    ``queue.handler(publisher.handle)``); ``await publisher.close()`` when done."""

    def __init__(self, config: KafkaPublishConfig) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<KafkaPublisher {self.config.bootstrap_servers} {self.config.topic!r}>"

    async def _open(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                cfg = self.config
                producer = AIOKafkaProducer(
                    bootstrap_servers=cfg.bootstrap_servers, acks="all",
                    enable_idempotence=cfg.idempotent, linger_ms=cfg.linger_ms,
                    request_timeout_ms=int(cfg.send_timeout * 1000))
                await producer.start()
                self._producer = producer
            return self._producer

    def key_of(self, message: Message) -> bytes | None:
        """The Kafka key of ``message`` (the partition it lands on), or None."""
        if self.config.key_header is not None:
            value = message.headers.get(self.config.key_header)
        else:
            value = message.headers.get("ordering_key") or message.correlation_id
        return value.encode() if value else None

    async def handle(self, message: Message) -> None:
        """Send ``message`` to Kafka; returns once the broker acknowledged the write."""
        producer = await self._open()
        body = encode_payload(message.payload)
        headers = [(k, v.encode()) for k, v in outgoing_headers(message).items()]
        headers.append((CONTENT_TYPE, body.content_type.encode()))
        await asyncio.wait_for(
            producer.send_and_wait(self.config.topic, body.data, key=self.key_of(message),
                                   headers=headers), self.config.send_timeout)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes what is in flight
            self._producer = None


class KafkaConsumer(Counted):
    """Moves records of a Kafka topic into the tidings ``target`` queue.

    ``await consumer.run()`` until cancelled or :meth:`stop`. A record that can never be
    stored (a body labelled JSON that is not) is skipped, its offset committed with the
    rest, and the reason logged: Kafka has no per-record reject.
    """

    def __init__(self, config: KafkaConsumeConfig, target: Queue, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.config = config
        self.target = target
        self.clock = clock

    def __repr__(self) -> str:
        return f"<KafkaConsumer {self.config.topic!r} group {self.config.group!r}>"

    async def run(self) -> None:
        """Consume until :meth:`stop`; a lost broker is retried (see ``reconnect``)."""
        await keep_running(f"kafka-in {self.config.topic}", self._session, self._stopped,
                           clock=self.clock)

    async def _session(self, attempts: Attempts) -> None:
        cfg = self.config
        consumer = AIOKafkaConsumer(
            cfg.topic, bootstrap_servers=cfg.bootstrap_servers, group_id=cfg.group,
            enable_auto_commit=False, auto_offset_reset=cfg.start,
            session_timeout_ms=int(cfg.session_timeout * 1000),
            heartbeat_interval_ms=max(50, int(cfg.session_timeout * 100)),
            rebalance_timeout_ms=int(cfg.session_timeout * 1000))
        try:
            await consumer.start()
            attempts.reset()
            while not self._stopped.is_set():
                batch = await consumer.getmany(timeout_ms=int(cfg.poll_timeout * 1000),
                                               max_records=cfg.batch)
                if batch:
                    await self.handle_batch(consumer, batch)
        finally:
            await consumer.stop()  # leaves the group: its partitions go to another bridge

    async def handle_batch(self, consumer: AIOKafkaConsumer,
                           batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        """Store ``batch`` in tidings, then commit its offsets (never before)."""
        items: list[Outgoing] = []
        for records in batch.values():
            for record in records:
                try:
                    items.append(self._outgoing(record))
                except ValidationError as exc:
                    self._reject(record, exc)
        try:
            stored = await self._store(items)
        except Exception as exc:  # the server is away or full: read the batch again later
            log.warning("tidings did not store %d Kafka records (%s); reading them again",
                        len(items), exc)
            for tp, records in batch.items():
                consumer.seek(tp, records[0].offset)
            self._count("requeued", len(items))
            await self.clock.sleep(self.config.retry_delay)
            return
        try:
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
        except KafkaError as exc:  # a rebalance took the partitions: the new owner reads
            log.warning("committing %d stored Kafka records failed (%s); they will be read "
                        "again and dropped as duplicates", stored, exc)
        self._count("moved", stored)

    async def _store(self, items: list[Outgoing]) -> int:
        """Publish ``items``; returns how many were stored (the rest can never be)."""
        if not items:
            return 0
        try:
            await self.target.publish_many(items)
            return len(items)
        except ValidationError:  # one of them can never be stored: store the others
            stored = 0
            for item in items:
                try:
                    await self.target.publish_many([item])
                    stored += 1
                except ValidationError as exc:
                    log.warning("skipped Kafka record %s: %s", item.idempotency_key, exc)
                    self._count("rejected")
            return stored

    def _outgoing(self, record: ConsumerRecord[Any, Any]) -> Outgoing:
        from ..queues.queue import Outgoing

        raw = dict(record.headers or ())
        content_type = raw.pop(CONTENT_TYPE, b"").decode() or None
        return Outgoing(decode_payload(record.value or b"", content_type),
                        priority=priority_from_header(raw), headers=incoming_headers(raw),
                        idempotency_key=(f"{self.config.key_prefix}{record.topic}:"
                                         f"{record.partition}:{record.offset}"))

    def _reject(self, record: ConsumerRecord[Any, Any], exc: Exception) -> None:
        log.warning("skipped Kafka record %s:%d:%d: %s", record.topic, record.partition,
                    record.offset, exc)
        self._count("rejected")
