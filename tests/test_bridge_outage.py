"""Bridges across a real outage: a TCP fault proxy (tests/fault_proxy.py) stands between
the bridge and its broker (NATS, Kafka, SQS on moto) or tidings' Redis, is cut mid-stream
and restored; every message is counted (none lost, each stored in tidings exactly once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from broker_helpers import create_topic, kafka_broker
from conftest import Recorder, collect_payloads, drop_keys, new_prefix
from fault_proxy import FaultProxy
from test_integrations_nats import URL as NATS_URL
from test_integrations_nats import Stream, stream  # noqa: F401 (the fixture)
from tidings import EventKind, Tidings
from tidings.integrations.aws import AwsConnection
from tidings.integrations.jetstream import (
    NatsConsumeConfig,
    NatsConsumer,
    NatsPublishConfig,
    NatsPublisher,
)
from tidings.integrations.kafka import KafkaConsumeConfig, KafkaConsumer
from tidings.integrations.sqs import SqsConsumeConfig, SqsConsumer

pytestmark = pytest.mark.timeout(60)
N = 30  # messages per test: 10 before the cut, 10 during it, 10 after


async def outage(proxy: FaultProxy) -> None:
    """Cut the proxy and keep it down until the bridge tried (and failed) to reconnect."""
    proxy.cut()
    proxy.refused.clear()
    await asyncio.wait_for(proxy.refused.wait(), 30)


async def each_once(app: Tidings, recorder: Recorder, queue: str, count: int) -> None:
    """The tidings queue holds each of ``count`` payloads exactly once."""
    handled = collect_payloads(app.queue(queue))
    async with app.worker([queue]):
        await recorder.wait_count(EventKind.ACKED, count)
    assert sorted(p["n"] for p in handled) == list(range(count))
    assert (await app.queue(queue).stats()).depth == 0


@pytest.fixture
async def nats_proxy() -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(urlsplit(NATS_URL).port or 4222).start()
    yield proxy
    await proxy.close()


async def test_nats_in_outlives_a_broker_outage_and_loses_nothing(
        app: Tidings, recorder: Recorder, stream: Stream, nats_proxy: FaultProxy) -> None:  # noqa: F811
    await app.connect()
    consumer = NatsConsumer(NatsConsumeConfig(
        stream=stream.name, subject=stream.subject, durable="bridge", batch=4,
        url=f"nats://127.0.0.1:{nats_proxy.port}", fetch_timeout=0.2, ack_wait=2), app.queue("in"))
    task = asyncio.create_task(consumer.run())

    async def send(first: int) -> None:
        for n in range(first, first + 10):
            await stream.js.publish(stream.subject, f'{{"n":{n}}}'.encode(),
                                    headers={"Content-Type": "application/json"})

    await send(0)
    await consumer.wait_until(moved=4)  # mid-stream
    await outage(nats_proxy)
    await send(10)  # the broker is up; only the bridge's link to it is down
    nats_proxy.restore()
    await send(20)
    await consumer.wait_until(moved=N)
    consumer.stop()
    await task  # it kept running through the outage
    await each_once(app, recorder, "in", N)


async def test_nats_in_started_while_the_broker_is_down_waits_for_it(
        app: Tidings, recorder: Recorder, stream: Stream,  # noqa: F811
        nats_proxy: FaultProxy) -> None:
    await app.connect()
    nats_proxy.cut()
    consumer = NatsConsumer(NatsConsumeConfig(
        stream=stream.name, subject=stream.subject, durable="bridge",
        url=f"nats://127.0.0.1:{nats_proxy.port}", fetch_timeout=0.2), app.queue("in"))
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(nats_proxy.refused.wait(), 30)
    assert not task.done()  # no exit: it waits for the broker
    nats_proxy.restore()
    for n in range(3):
        await stream.js.publish(stream.subject, f'{{"n":{n}}}'.encode(),
                                headers={"Content-Type": "application/json"})
    await consumer.wait_until(moved=3)
    consumer.stop()
    await task
    await each_once(app, recorder, "in", 3)


async def test_nats_out_outlives_a_broker_outage_and_loses_nothing(
        app: Tidings, recorder: Recorder, stream: Stream, nats_proxy: FaultProxy) -> None:  # noqa: F811
    publisher = NatsPublisher(NatsPublishConfig(
        subject=stream.subject, stream=stream.name, ack_timeout=1,
        url=f"nats://127.0.0.1:{nats_proxy.port}"))
    q = app.queue("out", max_attempts=100, backoff_base=0.05, backoff_cap=0.5)
    q.handler(publisher.handle)
    for n in range(10):
        await q.publish({"n": n})
    async with app.worker(["out"]):
        await recorder.wait_count(EventKind.ACKED, 10)
        await outage(nats_proxy)
        for n in range(10, 20):
            await q.publish({"n": n})
        await recorder.wait_count(EventKind.RETRIED, 1)
        nats_proxy.restore()
        await recorder.wait_count(EventKind.ACKED, 20)
    await publisher.close()
    info = await stream.js.stream_info(stream.name)
    assert info.state.messages == 20  # each once: Nats-Msg-Id drops a retried publish
    assert (await q.dlq.list()) == []


async def test_nats_in_does_not_ack_while_tidings_redis_is_away(
        redis_url: str, recorder: Recorder, stream: Stream) -> None:  # noqa: F811
    parts = urlsplit(redis_url)
    unix = parts.path if parts.scheme == "unix" else None
    redis_proxy = await FaultProxy(parts.port or 6379, parts.hostname or "127.0.0.1",
                                   unix=unix).start()
    prefix = new_prefix()
    app = Tidings(f"redis://127.0.0.1:{redis_proxy.port}", key_prefix=prefix,
                  middleware=[recorder])
    try:
        await app.connect()
        consumer = NatsConsumer(NatsConsumeConfig(
            stream=stream.name, subject=stream.subject, durable="bridge", url=NATS_URL,
            fetch_timeout=0.2, nak_delay=0.2), app.queue("in"))
        redis_proxy.cut()
        for n in range(N):
            await stream.js.publish(stream.subject, f'{{"n":{n}}}'.encode(),
                                    headers={"Content-Type": "application/json"})
        task = asyncio.create_task(consumer.run())
        await consumer.wait_until(requeued=1)  # handed back (nak), not acked
        assert consumer.moved == 0
        redis_proxy.restore()
        await consumer.wait_until(moved=N)
        consumer.stop()
        await task
        await each_once(app, recorder, "in", N)
    finally:
        if app.broker.connected:
            await drop_keys(app.broker.client, prefix)
        await app.close()
        await redis_proxy.close()


async def test_kafka_in_outlives_a_broker_outage_and_loses_nothing(
        app: Tidings, recorder: Recorder) -> None:
    async with kafka_broker() as (servers, proxy):
        topic = f"t{uuid.uuid4().hex[:10]}"
        await create_topic(servers, topic)
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()

        async def send(first: int) -> None:
            for n in range(first, first + 10):
                await producer.send_and_wait(topic, f'{{"n":{n}}}'.encode(),
                                             headers=[("content-type", b"application/json")])

        await app.connect()
        consumer = KafkaConsumer(KafkaConsumeConfig(
            topic=topic, group="bridge", bootstrap_servers=f"127.0.0.1:{proxy.port}", batch=4,
            poll_timeout=0.2, session_timeout=6), app.queue("in"))
        task = asyncio.create_task(consumer.run())
        try:
            await send(0)
            await consumer.wait_until(moved=4)
            await outage(proxy)
            # the producer too reaches the broker through the proxy (the advertised
            # address): its sends go out once the link is back
            during = asyncio.create_task(send(10))
            proxy.restore()
            await during
            await send(20)
            await consumer.wait_until(moved=N, timeout=40)
        finally:
            consumer.stop()
            await task
            await producer.stop()
    await each_once(app, recorder, "in", N)


@pytest.fixture
async def sqs_setup(s3_endpoint: str) -> AsyncIterator[tuple[Any, str, FaultProxy]]:
    direct = AwsConnection(endpoint_url=s3_endpoint, access_key_id="testing",
                           secret_access_key="testing")
    proxy = await FaultProxy(urlsplit(s3_endpoint).port or 80).start()
    async with direct.client("sqs") as sqs:
        url = (await sqs.create_queue(QueueName=f"tidings-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
        yield sqs, url, proxy
        await sqs.delete_queue(QueueUrl=url)
    await proxy.close()


async def test_sqs_in_outlives_an_outage_and_loses_nothing(
        app: Tidings, recorder: Recorder, sqs_setup: tuple[Any, str, FaultProxy]) -> None:
    sqs, url, proxy = sqs_setup
    await app.connect()
    via = AwsConnection(endpoint_url=f"http://127.0.0.1:{proxy.port}", access_key_id="testing",
                        secret_access_key="testing")
    consumer = SqsConsumer(SqsConsumeConfig(queue_url=url, connection=via, wait=1,
                                            visibility_timeout=2, pollers=1), app.queue("in"))

    async def send(first: int) -> None:
        await sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "MessageBody": f'{{"n":{n}}}', "MessageAttributes": {
                "content-type": {"DataType": "String", "StringValue": "application/json"}}}
            for n in range(first, first + 10)])

    task = asyncio.create_task(consumer.run())
    await send(0)
    await consumer.wait_until(moved=1)
    await outage(proxy)
    await send(10)
    proxy.restore()
    await send(20)
    await consumer.wait_until(moved=N)
    consumer.stop()
    await task
    await each_once(app, recorder, "in", N)
