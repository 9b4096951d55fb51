"""A bridge between tidings and NATS JetStream (nats-py), in both directions, at least once.

* :class:`NatsPublisher` is a tidings handler: it publishes each message to a JetStream
  subject and returns (so tidings acks) only after the stream's PubAck; the tidings id
  goes as ``Nats-Msg-Id``, so the stream drops a retried publish it already stored (within
  its duplicate window). Any failure raises into the queue's retry policy.
* :class:`NatsConsumer` pulls from a durable JetStream consumer in batches, stores each
  batch in tidings with one ``publish_many``, and only then acks each message (waiting for
  the server's confirmation of the ack). The idempotency key is the ``Nats-Msg-Id`` header,
  else the stream sequence number, which a redelivery keeps. A lost connection is logged,
  backed off and reopened (``reconnect.keep_running``); what was unacked comes again.

Install with ``pip install 'tidings[nats]'``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError as NatsConnectionClosed
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig
from nats.js.client import JetStreamContext

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

log = logging.getLogger("tidings.integrations.nats")
DEFAULT_URL = "nats://127.0.0.1:4222"
MSG_ID = "Nats-Msg-Id"
CONTENT_TYPE = "Content-Type"
_NATS_HEADERS = (MSG_ID, CONTENT_TYPE)


def _check_url(value: Any) -> str:
    url = require_text("url", value)
    if urlsplit(url).scheme not in ("nats", "tls", "ws", "wss"):
        raise ConfigError("url", "must be a nats://, tls://, ws:// or wss:// URL")
    return url


@dataclass(frozen=True, slots=True)
class NatsPublishConfig:
    """Where :class:`NatsPublisher` sends: ``subject`` (a stream must capture it; name
    the ``stream`` to have the server check that), each PubAck awaited at most
    ``ack_timeout`` seconds."""

    subject: str
    stream: str | None = None
    url: str = field(default=DEFAULT_URL, repr=False)
    ack_timeout: float = 10.0

    def __post_init__(self) -> None:
        _check_url(self.url)
        require_text("subject", self.subject)
        if self.stream is not None:
            require_text("stream", self.stream)
        require_positive("ack_timeout", self.ack_timeout)


@dataclass(frozen=True, slots=True)
class NatsConsumeConfig:
    """What :class:`NatsConsumer` reads: ``subject`` of ``stream`` through the durable
    consumer ``durable`` (created if missing), ``batch`` messages per pull, waiting at
    most ``fetch_timeout`` seconds for one. A batch tidings could not store is handed back
    (nak) to come again after ``nak_delay`` seconds. A message not acked within
    ``ack_wait`` seconds (its bridge died) is redelivered; this is set when the durable
    consumer is created."""

    stream: str
    subject: str
    durable: str
    url: str = field(default=DEFAULT_URL, repr=False)
    batch: int = 64
    fetch_timeout: float = 1.0
    nak_delay: float = 1.0
    ack_wait: float = 30.0
    key_prefix: str = "nats:"

    def __post_init__(self) -> None:
        _check_url(self.url)
        for name in ("stream", "subject", "durable"):
            require_text(name, getattr(self, name))
        require_positive("batch", self.batch, integer=True)
        require_positive("fetch_timeout", self.fetch_timeout)
        require_positive("nak_delay", self.nak_delay)
        require_positive("ack_wait", self.ack_wait)
        require_text("key_prefix", self.key_prefix, allow_empty=True)


class _Connected:
    """One NATS connection and its JetStream context, opened on first use."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = asyncio.Lock()
        self.client: Client | None = None
        self.js: JetStreamContext | None = None

    async def open(self) -> JetStreamContext:
        async with self._lock:
            if self.client is None or self.client.is_closed or self.js is None:
                # fail fast and let the bridge's backoff pace the retries
                self.client = await nats.connect(self._url, connect_timeout=2,
                                                 max_reconnect_attempts=3,
                                                 reconnect_time_wait=0.5)
                self.js = self.client.jetstream()
            return self.js

    async def close(self) -> None:
        if self.client is not None and not self.client.is_closed:
            await self.client.close()  # every publish and ack was awaited: nothing pends
        self.client = self.js = None


class NatsPublisher:
    """A tidings handler forwarding each message to JetStream (register
    ``queue.handler(publisher.handle)``); ``await publisher.close()`` when done."""

    def __init__(self, config: NatsPublishConfig) -> None:
        self.config = config
        self._conn = _Connected(config.url)

    def __repr__(self) -> str:
        return f"<NatsPublisher {self.config.subject!r}>"

    async def handle(self, message: Message) -> None:
        """Publish ``message`` to JetStream; returns once the stream stored it."""
        js = await self._conn.open()
        body = encode_payload(message.payload)
        headers = {**outgoing_headers(message), MSG_ID: message.id,
                   CONTENT_TYPE: body.content_type}
        await js.publish(self.config.subject, body.data, timeout=self.config.ack_timeout,
                         stream=self.config.stream, headers=headers)

    async def close(self) -> None:
        await self._conn.close()


class NatsConsumer(Counted):
    """Moves messages from a JetStream stream into the tidings ``target`` queue.

    ``await consumer.run()`` until cancelled or :meth:`stop` (seen between pulls). A
    message that can never be stored (a body labelled JSON that is not, a bad header) is
    terminated (``term``: never redelivered) with the reason logged.
    """

    def __init__(self, config: NatsConsumeConfig, target: Queue) -> None:
        super().__init__()
        self.config = config
        self.target = target
        self._conn = _Connected(config.url)

    def __repr__(self) -> str:
        return f"<NatsConsumer {self.config.stream!r} {self.config.subject!r}>"

    async def run(self) -> None:
        """Consume until :meth:`stop`; a lost connection is retried (see ``reconnect``)."""
        await keep_running(f"nats-in {self.config.stream}", self._session, self._stopped)

    async def _session(self, attempts: Attempts) -> None:
        cfg = self.config
        try:
            js = await self._conn.open()
            sub = await js.pull_subscribe(cfg.subject, durable=cfg.durable, stream=cfg.stream,
                                          config=ConsumerConfig(ack_wait=cfg.ack_wait))
            attempts.reset()
            while not self._stopped.is_set():
                if self._conn.client is None or not self._conn.client.is_connected:
                    # nats-py reconnects by itself; a fetch now would only time out
                    raise NatsConnectionClosed("not connected")
                try:
                    batch = await sub.fetch(cfg.batch, timeout=cfg.fetch_timeout)
                except (NatsTimeoutError, TimeoutError):  # nats-py < 2.8 raises the builtin
                    continue
                await self.handle_batch(batch)
        finally:
            await self._conn.close()

    async def handle_batch(self, batch: list[Msg]) -> None:
        """Store ``batch`` in tidings, then ack each message of it (never before)."""
        items: list[tuple[Msg, Outgoing]] = []
        for msg in batch:
            try:
                items.append((msg, self._outgoing(msg)))
            except ValidationError as exc:
                await self._reject(msg, exc)
        if not items:
            return
        try:
            await self.target.publish_many([item for _, item in items])
        except ValidationError:  # one of them can never be stored: find it, keep the rest
            for msg, item in items:
                await self.handle_batch_one(msg, item)
            return
        except Exception as exc:  # the server is away or full: hand the batch back
            log.warning("tidings did not store %d NATS messages (%s); nak'd", len(items), exc)
            for msg, _ in items:
                await msg.nak(delay=self.config.nak_delay)
            self._count("requeued", len(items))
            return
        # Acks of one batch in parallel: each still waits for the server's confirmation.
        # A lost ack only means a redelivery, which the idempotency key makes harmless.
        results = await asyncio.gather(*(msg.ack_sync() for msg, _ in items),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("%d acks of stored NATS messages failed (%s); they will come again "
                        "and be dropped as duplicates", len(failed), failed[0])
        self._count("moved", len(items))

    async def handle_batch_one(self, msg: Msg, item: Outgoing) -> None:
        try:
            await self.target.publish_many([item])
        except ValidationError as exc:
            await self._reject(msg, exc)
        except Exception as exc:
            log.warning("tidings did not store a NATS message (%s); nak'd", exc)
            await msg.nak(delay=self.config.nak_delay)
            self._count("requeued", 1)
        else:
            await msg.ack_sync()
            self._count("moved", 1)

    def _outgoing(self, msg: Msg) -> Outgoing:
        from ..queues.queue import Outgoing

        raw = msg.headers or {}
        key = raw.get(MSG_ID) or f"{msg.metadata.stream}:{msg.metadata.sequence.stream}"
        headers = incoming_headers({k: v for k, v in raw.items() if k not in _NATS_HEADERS})
        return Outgoing(decode_payload(msg.data, raw.get(CONTENT_TYPE)),
                        priority=priority_from_header(raw),
                        idempotency_key=f"{self.config.key_prefix}{key}", headers=headers)

    async def _reject(self, msg: Msg, exc: Exception) -> None:
        log.warning("terminated NATS message %s of %r: %s", msg.reply, self.config.stream, exc)
        await msg.term()
        self._count("rejected", 1)

