"""What the SQS and SNS bridges share (aiobotocore): the connection settings, the client,
the envelope as a message body plus message attributes, batch sends whose failed entries
are sent again, and :class:`SnsPublisher`.

The body is the payload as JSON text, or base64 text for bytes (SQS and SNS bodies are
text). Attributes (at most 10 on a message): ``content-type``, ``tidings-id``,
``tidings-priority``, then the tidings headers (so ``correlation_id`` and
``traceparent``) one attribute each while they fit and have a valid attribute name, the
rest together as JSON in ``tidings-headers``. On a FIFO queue or topic (``.fifo``) the
message group is the ``ordering_key`` header, else the correlation id, else ``tidings``,
and the deduplication id is the tidings id.

Install with ``pip install 'tidings[sqs]'``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiobotocore.session import get_session

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, PayloadError
from ..core.message import Message, Priority
from .mapping import (
    BINARY,
    ID_HEADER,
    PRIORITY_HEADER,
    decode_payload,
    encode_payload,
    outgoing_headers,
    require_text,
)

log = logging.getLogger("tidings.integrations.aws")
CONTENT_TYPE = "content-type"
ENCODING = "tidings-encoding"
HEADERS = "tidings-headers"
MAX_ATTRIBUTES = 10
BATCH = 10  # SendMessageBatch and PublishBatch take at most ten entries
_NAME = re.compile(r"^(?!aws\.|amazon\.)(?!.*\.\.)[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,255}$",
                   re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class AwsConnection:
    """Where the AWS API is: ``region``, an ``endpoint_url`` for a local server (moto,
    LocalStack; None: AWS itself) and keys (None: the usual AWS credential chain)."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        require_text("region", self.region)
        if self.endpoint_url is not None and not re.match(r"^https?://", self.endpoint_url):
            raise ConfigError("endpoint_url", "must be an http:// or https:// URL")

    def client(self, service: str) -> Any:
        """An aiobotocore client context manager for ``service``."""
        return get_session().create_client(
            service, region_name=self.region, endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key)


class Client:
    """One aiobotocore client, opened on first use, closed by :meth:`close`."""

    def __init__(self, connection: AwsConnection, service: str) -> None:
        self._connection, self._service = connection, service
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def open(self) -> Any:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            self._client = await stack.enter_async_context(
                self._connection.client(self._service))
            self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = self._client = None


def _text(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def to_aws(message: Message, *, fifo: bool = False) -> dict[str, Any]:
    """``message`` as a body, attributes (and FIFO group and dedup id): one batch entry
    without its ``Id`` and with the body under ``Body``."""
    body = encode_payload(message.payload)
    attributes = {CONTENT_TYPE: _text(body.content_type)}
    if body.content_type == BINARY:
        text = base64.b64encode(body.data).decode()
        attributes[ENCODING] = _text("base64")
    else:
        text = body.data.decode()
    headers = outgoing_headers(message)
    first = [h for h in (ID_HEADER, PRIORITY_HEADER, "correlation_id", "traceparent")
             if h in headers]  # these get attributes of their own before the others
    headers = {**{h: headers[h] for h in first}, **headers}
    rest: dict[str, str] = {}
    for name, value in headers.items():
        fits = len(attributes) < MAX_ATTRIBUTES - 1  # one is kept for tidings-headers
        if fits and _NAME.match(name) and value:
            attributes[name] = _text(value)
        else:
            rest[name] = value
    if rest:
        attributes[HEADERS] = _text(orjson.dumps(rest).decode())
    entry: dict[str, Any] = {"Body": text, "MessageAttributes": attributes}
    if fifo:
        entry["MessageGroupId"] = (message.headers.get("ordering_key")
                                   or message.correlation_id or "tidings")
        entry["MessageDeduplicationId"] = message.id
    return entry


def from_aws(body: str, attributes: dict[str, Any]) -> tuple[Any, dict[str, str], Priority]:
    """A payload, tidings headers and priority from an SQS body and its attributes."""
    values = {name: str(attr.get("StringValue", "")) for name, attr in attributes.items()}
    content_type = values.pop(CONTENT_TYPE, None)
    data = (base64.b64decode(body) if values.pop(ENCODING, None) == "base64"
            else body.encode())
    headers: dict[str, str] = {}
    extra = values.pop(HEADERS, None)
    if extra is not None:
        try:
            headers.update({str(k): str(v) for k, v in orjson.loads(extra).items()})
        except (orjson.JSONDecodeError, AttributeError):
            raise PayloadError(HEADERS, "is not a JSON object") from None
    headers.update(values)
    value = headers.pop(PRIORITY_HEADER, None)
    headers.pop(ID_HEADER, None)
    try:
        priority = Priority.parse(value) if value else Priority.NORMAL
    except ValueError:
        priority = Priority.NORMAL
    return decode_payload(data, content_type), headers, priority


def unwrap_sns(raw: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """Body, SQS-style attributes and message id of an SQS message, taken from the SNS
    envelope (``Type: Notification``) when it has one: a subscription without
    ``RawMessageDelivery`` wraps what was published in a JSON document. The id is the SNS
    MessageId, which every redelivery of the notification keeps."""
    body, message_id = raw["Body"], raw["MessageId"]
    attributes = raw.get("MessageAttributes") or {}
    if not body.startswith("{"):
        return body, attributes, message_id
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, attributes, message_id
    if not isinstance(doc, dict) or doc.get("Type") != "Notification" \
            or not isinstance(doc.get("Message"), str) or "TopicArn" not in doc:
        return body, attributes, message_id
    unwrapped: dict[str, Any] = {}
    for name, attr in (doc.get("MessageAttributes") or {}).items():
        if isinstance(attr, dict) and attr.get("Type") in ("String", "Number"):
            unwrapped[name] = {"DataType": attr["Type"], "StringValue": str(attr["Value"])}
    return doc["Message"], unwrapped, str(doc.get("MessageId") or message_id)


Send = Callable[[list[dict[str, Any]]], Awaitable[dict[str, Any]]]


async def send_batch(send: Send, messages: list[Message], entries: list[dict[str, Any]], *,
                     retries: int, clock: Clock, what: str) -> None:
    """Send ``entries`` (one per message) ten at a time; send failed entries again up to
    ``retries`` times, then mark their messages: a sender fault (it can never succeed)
    dead-lettered, anything else retried through the queue's policy."""
    def reason(failure: dict[str, Any]) -> str:
        return f"{what} {failure.get('Code')}: {failure.get('Message')}"

    for start in range(0, len(entries), BATCH):
        pending = {str(i): (messages[i], entries[i])
                   for i in range(start, min(start + BATCH, len(entries)))}
        failed: dict[str, dict[str, Any]] = {}
        for attempt in range(retries + 1):
            answer = await send([{"Id": i, **e} for i, (_, e) in pending.items()])
            failed = {f["Id"]: f for f in answer.get("Failed", [])}
            for i in list(pending):
                failure = failed.get(i)
                if failure is None:
                    del pending[i]  # sent
                elif failure.get("SenderFault"):  # can never succeed
                    pending.pop(i)[0].dead_letter(reason(failure))
            if not pending:
                break
            if attempt < retries:
                await clock.sleep(0.05 * 2 ** attempt)
        for i, (message, _) in pending.items():
            message.retry(reason=reason(failed[i]))


@dataclass(frozen=True, slots=True)
class SnsPublishConfig:
    """Where :class:`SnsPublisher` sends: the topic ``topic_arn``; a failed batch entry is
    sent again up to ``entry_retries`` times before its message is retried by tidings."""

    topic_arn: str
    connection: AwsConnection = field(default_factory=AwsConnection)
    entry_retries: int = 3

    def __post_init__(self) -> None:
        if not require_text("topic_arn", self.topic_arn).startswith("arn:"):
            raise ConfigError("topic_arn", "must be a topic ARN (arn:aws:sns:...)")
        if isinstance(self.entry_retries, bool) or not isinstance(self.entry_retries, int) \
                or self.entry_retries < 0:
            raise ConfigError("entry_retries", f"must be an int >= 0, got "
                              f"{self.entry_retries!r}")


def raise_outcome(message: Message) -> None:
    """Raise what a batch send marked on ``message`` (single-message handlers)."""
    if message.outcome is not None:
        outcome, message.outcome = message.outcome, None
        raise outcome


class SnsPublisher:
    """A tidings handler publishing to an SNS topic: ``queue.handler(publisher.handle)``,
    or ``queue.handler(publisher.handle_batch, batch_size=10)`` for PublishBatch."""

    def __init__(self, config: SnsPublishConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self._client = Client(config.connection, "sns")

    def __repr__(self) -> str:
        return f"<SnsPublisher {self.config.topic_arn!r}>"

    async def handle(self, message: Message) -> None:
        """Publish ``message``; returns once SNS accepted it."""
        await self.handle_batch([message])
        raise_outcome(message)

    async def handle_batch(self, messages: list[Message]) -> None:
        """Publish ``messages`` with PublishBatch; a failure marks its message."""
        client = await self._client.open()
        arn = self.config.topic_arn
        entries = []
        for message in messages:
            entry = to_aws(message, fifo=arn.endswith(".fifo"))
            entry["Message"] = entry.pop("Body")
            entries.append(entry)

        async def send(batch: list[dict[str, Any]]) -> dict[str, Any]:
            answer: dict[str, Any] = await client.publish_batch(
                TopicArn=arn, PublishBatchRequestEntries=batch)
            return answer

        await send_batch(send, messages, entries, retries=self.config.entry_retries,
                         clock=self.clock, what="sns")

    async def close(self) -> None:
        await self._client.close()


__all__ = ["AwsConnection", "SnsPublishConfig", "SnsPublisher", "from_aws", "to_aws"]
