"""The SQS and SNS bridges against moto's standalone server (a real HTTP server on a free
port, started once per session), both directions, and SNS -> SQS fan-out into tidings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from conftest import Recorder, collect_payloads
from tidings import ConfigError, EventKind, Message, Tidings
from tidings.integrations.aws import AwsConnection, SnsPublishConfig, SnsPublisher
from tidings.integrations.sqs import (
    SqsConsumeConfig,
    SqsConsumer,
    SqsPublishConfig,
    SqsPublisher,
)


@pytest.fixture
def aws(s3_endpoint: str) -> AwsConnection:  # moto serves every service on one port
    return AwsConnection(endpoint_url=s3_endpoint, access_key_id="testing",
                         secret_access_key="testing")


@pytest.fixture
async def sqs(aws: AwsConnection) -> AsyncIterator[Any]:
    async with aws.client("sqs") as client:
        yield client


@pytest.fixture
async def queue_url(sqs: Any) -> AsyncIterator[str]:
    url = (await sqs.create_queue(QueueName=f"tidings-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    yield url
    await sqs.delete_queue(QueueUrl=url)


async def receive_all(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        answer = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1, MessageAttributeNames=["All"])
        got.extend(answer.get("Messages", []))
    return got


def attrs(raw: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in raw.get("MessageAttributes", {}).items()}


async def test_tidings_messages_reach_sqs_in_batches_with_id_and_headers(
        app: Tidings, recorder: Recorder, aws: AwsConnection, sqs: Any, queue_url: str) -> None:
    publisher = SqsPublisher(SqsPublishConfig(queue_url=queue_url, connection=aws))
    q = app.queue("to-sqs")
    q.handler(publisher.handle_batch, batch_size=10)
    many = {f"h{n}": str(n) for n in range(12)}  # more headers than SQS has attributes
    first = await q.publish({"to": "a@b.c"}, correlation_id="corr-1", priority="high",
                            headers={"traceparent": "00-abc-def-01", **many})
    second = await q.publish(b"\x00raw")
    for n in range(20):
        await q.publish({"n": n})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 22)
    await publisher.close()
    got = {attrs(r)["tidings-id"]: r for r in await receive_all(sqs, queue_url, 22)}
    assert {first, second} <= set(got) and len(got) == 22
    one = attrs(got[first])
    assert got[first]["Body"] == '{"to":"a@b.c"}' and one["content-type"] == "application/json"
    assert one["traceparent"] == "00-abc-def-01" and one["correlation_id"] == "corr-1"
    assert one["tidings-priority"] == "high"
    assert {**one, **orjson.loads(one["tidings-headers"])}.items() >= many.items()
    assert attrs(got[second])["tidings-encoding"] == "base64"


async def test_failed_batch_entries_are_sent_again_then_retried_by_tidings(
        app: Tidings, recorder: Recorder, aws: AwsConnection, sqs: Any, queue_url: str) -> None:
    publisher = SqsPublisher(SqsPublishConfig(queue_url=queue_url, connection=aws,
                                              entry_retries=1))
    real = publisher._client.open
    calls: list[int] = []

    class Flaky:  # the real client, but the first two sends of {"n":0} fail
        def __init__(self, client: Any) -> None:
            self.client = client

        async def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
            entries = kwargs["Entries"]
            bad = [e for e in entries if e["MessageBody"] == '{"n":0}' and len(calls) < 2]
            if bad:
                calls.append(1)
            kept = [e for e in entries if e not in bad]
            answer: dict[str, Any] = {"Successful": [], "Failed": [
                {"Id": e["Id"], "SenderFault": False, "Code": "InternalError",
                 "Message": "try again"} for e in bad]}
            if kept:
                sent = await self.client.send_message_batch(QueueUrl=kwargs["QueueUrl"],
                                                            Entries=kept)
                answer["Successful"] = sent["Successful"]
            return answer

    async def flaky_open() -> Any:
        return Flaky(await real())

    publisher._client.open = flaky_open  # type: ignore[method-assign]
    q = app.queue("to-sqs", backoff_base=0.01, backoff_cap=0.05)
    q.handler(publisher.handle_batch, batch_size=10)
    for n in range(3):
        await q.publish({"n": n})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 3)
    await publisher.close()
    assert recorder.counts[EventKind.RETRIED] == 1  # sent again once, then retried by tidings
    assert "InternalError" in (recorder.of(EventKind.RETRIED)[0].error or "")
    bodies = sorted(r["Body"] for r in await receive_all(sqs, queue_url, 3))
    assert bodies == ['{"n":0}', '{"n":1}', '{"n":2}']


async def test_sqs_messages_reach_tidings_once_and_are_deleted_after_the_publish(
        app: Tidings, recorder: Recorder, aws: AwsConnection, sqs: Any, queue_url: str) -> None:
    for n in range(15):
        await sqs.send_message(QueueUrl=queue_url, MessageBody=f'{{"n":{n}}}',
                               MessageAttributes={
                                   "content-type": {"DataType": "String",
                                                    "StringValue": "application/json"},
                                   "traceparent": {"DataType": "String",
                                                   "StringValue": "00-t-s-01"}})
    target = app.queue("from-sqs")
    handled = collect_payloads(target)
    await app.connect()
    consumer = SqsConsumer(SqsConsumeConfig(queue_url=queue_url, connection=aws, wait=1),
                           target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=15)
    consumer.stop()
    await task
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 15)
    assert sorted(p["n"] for p in handled) == list(range(15))
    msg = recorder.of(EventKind.ACKED)[0].message
    assert msg is not None and msg.headers == {"traceparent": "00-t-s-01"}
    assert (msg.idempotency_key or "").startswith("sqs:")
    left = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert left["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_a_message_received_but_not_deleted_comes_back_and_is_dropped_by_its_key(
        app: Tidings, aws: AwsConnection, sqs: Any, queue_url: str) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody='"once"')
    target = app.queue("from-sqs")
    await app.connect()
    config = SqsConsumeConfig(queue_url=queue_url, connection=aws, wait=1,
                              visibility_timeout=1)
    crashed = SqsConsumer(config, target)
    crashed._delete = lambda client, stored: asyncio.sleep(0)  # type: ignore[method-assign]
    [raw] = (await sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=1))["Messages"]
    await crashed.handle_batch(sqs, [raw])  # stored, then "died" before the delete
    assert (await target.stats()).depth == 1
    again = SqsConsumer(config, target)
    task = asyncio.create_task(again.run())
    await again.wait_until(moved=1)  # it came back after the visibility timeout
    again.stop()
    await task
    assert (await target.stats()).depth == 1


async def test_a_batch_tidings_cannot_store_is_handed_back_not_deleted(
        app: Tidings, aws: AwsConnection, sqs: Any, queue_url: str) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody='"waiting"')
    target = app.queue("from-sqs", max_depth=1)
    await target.publish("fills the queue")
    consumer = SqsConsumer(SqsConsumeConfig(queue_url=queue_url, connection=aws, wait=1,
                                            retry_delay=0), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(requeued=2)  # handed back at once, received again
    consumer.stop()
    await task
    assert consumer.moved == 0


async def test_sns_fans_out_to_two_sqs_queues_and_both_reach_tidings(
        app: Tidings, recorder: Recorder, aws: AwsConnection, sqs: Any) -> None:
    async with aws.client("sns") as sns:
        arn = (await sns.create_topic(Name=f"tidings-{uuid.uuid4().hex[:12]}"))["TopicArn"]
        urls = []
        for _ in range(2):
            url = (await sqs.create_queue(QueueName=f"fan-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
            queue_arn = (await sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
            await sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn,
                                Attributes={"RawMessageDelivery": "true"})
            urls.append(url)
        publisher = SnsPublisher(SnsPublishConfig(topic_arn=arn, connection=aws))
        source = app.queue("to-sns")
        source.handler(publisher.handle_batch, batch_size=10)
        ids = [await source.publish({"n": n}, correlation_id=f"c-{n}") for n in range(5)]
        targets = [app.queue(f"fan-{i}") for i in range(2)]
        async with app.worker():
            await recorder.wait_for(
                lambda: sum(1 for e in recorder.of(EventKind.ACKED)
                            if e.message is not None and e.message.queue == "to-sns") == 5)
            consumers = [SqsConsumer(SqsConsumeConfig(queue_url=url, connection=aws, wait=1),
                                     target) for url, target in zip(urls, targets, strict=True)]
            tasks = [asyncio.create_task(c.run()) for c in consumers]
            for consumer in consumers:
                await consumer.wait_until(moved=5)
                consumer.stop()
            await asyncio.gather(*tasks)
        await publisher.close()
        for target in targets:
            assert (await target.stats()).depth == 5
        for url in urls:
            await sqs.delete_queue(QueueUrl=url)
        await sns.delete_topic(TopicArn=arn)
    assert len(set(ids)) == 5


async def test_sns_publish_carries_the_correlation_id_to_the_subscriber(
        app: Tidings, recorder: Recorder, aws: AwsConnection, sqs: Any, queue_url: str) -> None:
    async with aws.client("sns") as sns:
        arn = (await sns.create_topic(Name=f"tidings-{uuid.uuid4().hex[:12]}"))["TopicArn"]
        queue_arn = (await sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
        await sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn,
                            Attributes={"RawMessageDelivery": "true"})
        publisher = SnsPublisher(SnsPublishConfig(topic_arn=arn, connection=aws))
        source = app.queue("to-sns")
        source.handler(publisher.handle)
        msg_id = await source.publish({"n": 1}, correlation_id="c-1",
                                      headers={"traceparent": "00-x-y-01"})
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 1)
        await publisher.close()
        await sns.delete_topic(TopicArn=arn)
    [raw] = await receive_all(sqs, queue_url, 1)
    got = attrs(raw)
    assert (got["tidings-id"], got["correlation_id"], got["traceparent"]) == (
        msg_id, "c-1", "00-x-y-01")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"queue_url": "sqs-queue"}, "queue_url"),
    ({"queue_url": "http://x/q", "wait": 0}, "wait"),
    ({"queue_url": "http://x/q", "wait": 21}, "wait"),
    ({"queue_url": "http://x/q", "visibility_timeout": 0}, "visibility_timeout"),
    ({"queue_url": "http://x/q", "pollers": 0}, "pollers"),
])
def test_bad_consume_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SqsConsumeConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_bad_publish_configs_name_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        SnsPublishConfig(topic_arn="topic")
    assert caught.value.field == "topic_arn"
    with pytest.raises(ConfigError) as caught:
        SqsPublishConfig(queue_url="http://x/q", entry_retries=-1)
    assert caught.value.field == "entry_retries"
    with pytest.raises(ConfigError) as caught:
        AwsConnection(endpoint_url="localhost:4566")
    assert caught.value.field == "endpoint_url"
    assert "testing" not in repr(AwsConnection(secret_access_key="testing"))


def test_a_message_survives_the_sqs_mapping_both_ways() -> None:
    from tidings.integrations.aws import from_aws, to_aws

    msg = Message("id-1", "q", {"a": [1, 2]}, {"correlation_id": "c", "x y": "spaced"})
    entry = to_aws(msg)
    payload, headers, priority = from_aws(entry["Body"], entry["MessageAttributes"])
    assert (payload, headers, priority.label) == (
        {"a": [1, 2]}, {"correlation_id": "c", "x y": "spaced"}, "normal")
