"""A bridge between tidings and AWS SQS (aiobotocore), in both directions, at least once.

* :class:`SqsPublisher` is a tidings handler: ``handle`` sends one message,
  ``handle_batch`` (register with ``batch_size=10``) sends with SendMessageBatch; an entry
  SQS failed is sent again (``entry_retries``), then its message goes through the queue's
  retry policy, or to its dead letters when SQS says the sender is at fault.
* :class:`SqsConsumer` long-polls a queue (``wait`` seconds), stores each received batch
  in tidings with one ``publish_many`` and only then deletes it. What it received stays
  invisible to other consumers for ``visibility_timeout`` seconds; a bridge that died
  before deleting lets it come back after that, and the idempotency key ``sqs:`` +
  MessageId (kept by a redelivery) drops the repeat.

Messages from an SNS topic arrive with their attributes when the subscription has
``RawMessageDelivery`` on (see :class:`~tidings.integrations.aws.SnsPublisher`); without
it SNS wraps each in a JSON envelope, which ``sns_envelope="auto"`` (the default) unwraps
(body, attributes, and the SNS MessageId as the key); ``"raw"`` stores the body as is.
A lost connection to SQS is logged, backed off and retried (see ``reconnect``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, ValidationError
from ..core.message import Message
from .aws import (
    AwsConnection,
    Client,
    from_aws,
    raise_outcome,
    send_batch,
    to_aws,
    unwrap_sns,
)
from .counted import Counted
from .mapping import require_positive, require_text
from .reconnect import Attempts, keep_running

if TYPE_CHECKING:
    from ..queues.queue import Outgoing, Queue

log = logging.getLogger("tidings.integrations.sqs")


def _check_queue_url(value: Any) -> str:
    url = require_text("queue_url", value)
    if not url.startswith(("http://", "https://")):
        raise ConfigError("queue_url", "must be the queue's http(s):// URL")
    return url


@dataclass(frozen=True, slots=True)
class SqsPublishConfig:
    """Where :class:`SqsPublisher` sends: ``queue_url``; a failed batch entry is sent
    again up to ``entry_retries`` times before its message is retried by tidings."""

    queue_url: str
    connection: AwsConnection = field(default_factory=AwsConnection)
    entry_retries: int = 3

    def __post_init__(self) -> None:
        _check_queue_url(self.queue_url)
        if isinstance(self.entry_retries, bool) or not isinstance(self.entry_retries, int) \
                or self.entry_retries < 0:
            raise ConfigError("entry_retries", f"must be an int >= 0, got "
                              f"{self.entry_retries!r}")


@dataclass(frozen=True, slots=True)
class SqsConsumeConfig:
    """What :class:`SqsConsumer` reads: ``queue_url`` with ``pollers`` concurrent long
    polls of up to ten messages, each waiting at most ``wait`` seconds (1-20). A batch
    tidings could not store is made visible again after ``retry_delay`` seconds."""

    queue_url: str
    connection: AwsConnection = field(default_factory=AwsConnection)
    wait: int = 10
    visibility_timeout: int = 30
    pollers: int = 2
    retry_delay: int = 1
    key_prefix: str = "sqs:"
    sns_envelope: str = "auto"

    def __post_init__(self) -> None:
        _check_queue_url(self.queue_url)
        if isinstance(self.wait, bool) or not isinstance(self.wait, int) \
                or not 1 <= self.wait <= 20:
            raise ConfigError("wait", f"must be an int from 1 to 20, got {self.wait!r}")
        require_positive("visibility_timeout", self.visibility_timeout, integer=True)
        require_positive("pollers", self.pollers, integer=True)
        if isinstance(self.retry_delay, bool) or not isinstance(self.retry_delay, int) \
                or self.retry_delay < 0:
            raise ConfigError("retry_delay", f"must be an int >= 0, got {self.retry_delay!r}")
        require_text("key_prefix", self.key_prefix, allow_empty=True)
        if self.sns_envelope not in ("auto", "raw"):
            raise ConfigError("sns_envelope", f"must be 'auto' or 'raw', got "
                              f"{self.sns_envelope!r}")


class SqsPublisher:
    """A tidings handler sending to SQS: ``queue.handler(publisher.handle)``, or
    ``queue.handler(publisher.handle_batch, batch_size=10)`` for SendMessageBatch."""

    def __init__(self, config: SqsPublishConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self._client = Client(config.connection, "sqs")

    def __repr__(self) -> str:
        return f"<SqsPublisher {self.config.queue_url!r}>"

    async def handle(self, message: Message) -> None:
        """Send ``message``; returns once SQS stored it."""
        await self.handle_batch([message])
        raise_outcome(message)

    async def handle_batch(self, messages: list[Message]) -> None:
        """Send ``messages`` with SendMessageBatch; a failure marks its message."""
        client = await self._client.open()
        url = self.config.queue_url
        entries = []
        for message in messages:
            entry = to_aws(message, fifo=url.endswith(".fifo"))
            entry["MessageBody"] = entry.pop("Body")
            entries.append(entry)

        async def send(batch: list[dict[str, Any]]) -> dict[str, Any]:
            answer: dict[str, Any] = await client.send_message_batch(QueueUrl=url,
                                                                     Entries=batch)
            return answer

        await send_batch(send, messages, entries, retries=self.config.entry_retries,
                         clock=self.clock, what="sqs")

    async def close(self) -> None:
        await self._client.close()


class SqsConsumer(Counted):
    """Moves messages from an SQS queue into the tidings ``target`` queue.

    ``await consumer.run()`` until cancelled or :meth:`stop` (seen between polls; a poll
    in hand is settled first). A message that can never be stored is left in SQS (not
    deleted): the queue's redrive policy moves it to its dead-letter queue after
    ``maxReceiveCount`` receives; the reason is logged.
    """

    def __init__(self, config: SqsConsumeConfig, target: Queue, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__()
        self.config = config
        self.target = target
        self.clock = clock
        self._client = Client(config.connection, "sqs")

    def __repr__(self) -> str:
        return f"<SqsConsumer {self.config.queue_url!r}>"

    async def run(self) -> None:
        client = await self._client.open()
        try:
            await asyncio.gather(*(
                keep_running(f"sqs-in {self.config.queue_url}", self._poller(client),
                             self._stopped, clock=self.clock)
                for _ in range(self.config.pollers)))
        finally:
            await self._client.close()

    def _poller(self, client: Any) -> Callable[[Attempts], Awaitable[None]]:
        async def session(attempts: Attempts) -> None:
            await self._poll(client, attempts)
        return session

    async def _poll(self, client: Any, attempts: Attempts) -> None:
        cfg = self.config
        stopped = asyncio.ensure_future(self._stopped.wait())
        receive: asyncio.Future[Any] | None = None
        try:
            while not self._stopped.is_set():
                receive = asyncio.ensure_future(client.receive_message(
                    QueueUrl=cfg.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=cfg.wait,
                    VisibilityTimeout=cfg.visibility_timeout, MessageAttributeNames=["All"]))
                await asyncio.wait([receive, stopped], return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():  # stopped mid-poll: what it may have received comes
                    receive.cancel()  # back after the visibility timeout
                    return
                received = receive.result().get("Messages", [])
                attempts.reset()
                if received:
                    await self.handle_batch(client, received)
        finally:
            stopped.cancel()
            if receive is not None:
                receive.cancel()

    async def handle_batch(self, client: Any, received: list[dict[str, Any]]) -> None:
        """Store ``received`` in tidings, then delete it from SQS (never before)."""
        items: list[tuple[dict[str, Any], Outgoing]] = []
        for raw in received:
            try:
                items.append((raw, self._outgoing(raw)))
            except ValidationError as exc:
                self._reject(raw, exc)
        if not items:
            return
        try:
            await self.target.publish_many([item for _, item in items])
        except ValidationError:  # one can never be stored: store the others one by one
            kept = []
            for raw, item in items:
                try:
                    await self.target.publish_many([item])
                    kept.append((raw, item))
                except ValidationError as exc:
                    self._reject(raw, exc)
            items = kept
        except Exception as exc:  # the server is away or full: hand the batch back
            log.warning("tidings did not store %d SQS messages (%s); handed back",
                        len(items), exc)
            await client.change_message_visibility_batch(
                QueueUrl=self.config.queue_url, Entries=[
                    {"Id": str(n), "ReceiptHandle": raw["ReceiptHandle"],
                     "VisibilityTimeout": self.config.retry_delay}
                    for n, (raw, _) in enumerate(items)])
            self._count("requeued", len(items))
            return
        await self._delete(client, [raw for raw, _ in items])

    async def _delete(self, client: Any, stored: list[dict[str, Any]]) -> None:
        if not stored:
            return
        answer = await client.delete_message_batch(QueueUrl=self.config.queue_url, Entries=[
            {"Id": str(n), "ReceiptHandle": raw["ReceiptHandle"]}
            for n, raw in enumerate(stored)])
        if answer.get("Failed"):  # they come again and are dropped by their key
            log.warning("%d deletes of stored SQS messages failed (%s)",
                        len(answer["Failed"]), answer["Failed"][0].get("Code"))
        self._count("moved", len(stored))

    def _outgoing(self, raw: dict[str, Any]) -> Outgoing:
        from ..queues.queue import Outgoing

        if self.config.sns_envelope == "auto":
            body, attributes, message_id = unwrap_sns(raw)
        else:
            body, attributes = raw["Body"], raw.get("MessageAttributes") or {}
            message_id = raw["MessageId"]
        payload, headers, priority = from_aws(body, attributes)
        return Outgoing(payload, priority=priority, headers=headers,
                        idempotency_key=f"{self.config.key_prefix}{message_id}")

    def _reject(self, raw: dict[str, Any], exc: Exception) -> None:
        log.warning("left SQS message %s for the redrive policy: %s", raw.get("MessageId"),
                    exc)
        self._count("rejected")
