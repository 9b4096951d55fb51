"""SNS -> SQS -> tidings without ``RawMessageDelivery``: SNS wraps each message in a JSON
envelope, which the SqsConsumer unwraps (``sns_envelope="auto"``) or keeps (``"raw"``).
Against moto's standalone server, through its real SNS -> SQS fan-out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from conftest import Recorder
from test_integrations_sqs import aws, queue_url, sqs  # noqa: F401 (fixtures)
from tidings import ConfigError, EventKind, Message, Tidings
from tidings.integrations.aws import AwsConnection, SnsPublishConfig, SnsPublisher
from tidings.integrations.sqs import SqsConsumeConfig, SqsConsumer


@pytest.fixture
async def wrapped(aws: AwsConnection, sqs: Any,  # noqa: F811
                  queue_url: str) -> AsyncIterator[str]:  # noqa: F811
    """A topic whose SQS subscription (``queue_url``) has raw delivery off: its ARN."""
    async with aws.client("sns") as sns:
        arn = (await sns.create_topic(Name=f"tidings-{uuid.uuid4().hex[:12]}"))["TopicArn"]
        queue_arn = (await sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
        await sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        yield arn
        await sns.delete_topic(TopicArn=arn)


async def move(app: Tidings, recorder: Recorder, aws: AwsConnection,  # noqa: F811
               arn: str, queue_url: str, envelope: str) -> list[Message]:  # noqa: F811
    """Publish two messages from tidings to SNS; consume the SQS queue into tidings."""
    publisher = SnsPublisher(SnsPublishConfig(topic_arn=arn, connection=aws))
    source = app.queue("to-sns")
    source.handler(publisher.handle_batch, batch_size=10)
    await source.publish({"n": 1}, correlation_id="c-1", priority="high",
                         headers={"traceparent": "00-x-y-01"})
    await source.publish({"n": 2})
    async with app.worker(["to-sns"]):
        await recorder.wait_count(EventKind.ACKED, 2)
    await publisher.close()
    target = app.queue("from-sqs")
    consumer = SqsConsumer(SqsConsumeConfig(queue_url=queue_url, connection=aws, wait=1,
                                            sns_envelope=envelope), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=2)
    consumer.stop()
    await task
    got: list[Message] = []

    @target.handler
    async def keep(msg: Message) -> None:
        got.append(msg)

    async with app.worker(["from-sqs"]):
        await recorder.wait_count(EventKind.ACKED, 4)
    return sorted(got, key=lambda m: str(m.payload))


async def test_a_wrapped_sns_message_is_unwrapped_with_its_attributes(
        app: Tidings, recorder: Recorder, aws: AwsConnection,  # noqa: F811
        wrapped: str, queue_url: str) -> None:  # noqa: F811
    first, second = await move(app, recorder, aws, wrapped, queue_url, "auto")
    assert (first.payload, second.payload) == ({"n": 1}, {"n": 2})
    assert first.correlation_id == "c-1" and first.headers["traceparent"] == "00-x-y-01"
    assert first.priority.name == "HIGH"


async def test_raw_mode_keeps_the_sns_envelope_as_the_body(
        app: Tidings, recorder: Recorder, aws: AwsConnection,  # noqa: F811
        wrapped: str, queue_url: str) -> None:  # noqa: F811
    messages = await move(app, recorder, aws, wrapped, queue_url, "raw")
    bodies = [m.payload for m in messages]
    docs = [orjson.loads(b) if isinstance(b, str | bytes) else b for b in bodies]
    assert all(doc["Type"] == "Notification" for doc in docs)
    assert sorted(orjson.loads(doc["Message"])["n"] for doc in docs) == [1, 2]


def test_bad_sns_envelope_mode_names_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        SqsConsumeConfig(queue_url="http://x/q", sns_envelope="json")
    assert caught.value.field == "sns_envelope"
