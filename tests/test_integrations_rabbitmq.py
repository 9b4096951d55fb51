"""The RabbitMQ bridge against the machine's RabbitMQ (127.0.0.1:5672), both directions.

Every test uses its own RabbitMQ queue (a unique name), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from conftest import Recorder, collect_payloads
from tidings import ConfigError, EventKind, Tidings
from tidings.integrations.rabbitmq import (
    RabbitConsumeConfig,
    RabbitConsumer,
    RabbitPublishConfig,
    RabbitPublisher,
    safe_url,
)

URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractChannel]:
    # A plain connection: a robust channel caches declarations, so a passive declare
    # would report a stale message count.
    connection: AbstractConnection = await aio_pika.connect(URL)
    channel = await connection.channel()
    yield channel
    await connection.close()


@pytest.fixture
async def rabbit_queue(amqp: AbstractChannel) -> AsyncIterator[str]:
    """A unique RabbitMQ queue name; the queue (if declared) is deleted after the test."""
    name = f"tidings-test-{uuid.uuid4().hex[:12]}"
    yield name
    await amqp.queue_delete(name)


async def drain(amqp: AbstractChannel, name: str, count: int) -> list[aio_pika.IncomingMessage]:
    queue = await amqp.get_queue(name)
    got: list[aio_pika.IncomingMessage] = []
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            got.append(message)  # type: ignore[arg-type]
            if len(got) == count:
                break
    return got


async def test_tidings_messages_reach_rabbitmq_with_id_headers_and_priority(
        app: Tidings, recorder: Recorder, amqp: AbstractChannel, rabbit_queue: str) -> None:
    await amqp.declare_queue(rabbit_queue, durable=True, arguments={"x-max-priority": 9})
    publisher = RabbitPublisher(RabbitPublishConfig(routing_key=rabbit_queue, url=URL))
    q = app.queue("to-rabbit")
    q.handler(publisher.handle)
    first = await q.publish({"to": "a@b.c"}, correlation_id="corr-1",
                            headers={"traceparent": "00-abc-def-01"}, priority="high")
    second = await q.publish(b"\x00raw")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2)
    await publisher.close()
    got = {m.message_id: m for m in await drain(amqp, rabbit_queue, 2)}
    assert set(got) == {first, second}
    one = got[first]
    assert one.body == b'{"to":"a@b.c"}' and one.content_type == "application/json"
    assert one.correlation_id == "corr-1" and one.priority == 9
    assert one.headers["traceparent"] == "00-abc-def-01"
    assert one.headers["tidings-id"] == first and one.headers["tidings-priority"] == "high"
    assert one.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert got[second].body == b"\x00raw"
    assert got[second].content_type == "application/octet-stream"


async def test_an_unroutable_publish_retries_through_tidings_and_is_not_lost(
        app: Tidings, recorder: Recorder, amqp: AbstractChannel, rabbit_queue: str) -> None:
    # No queue is bound yet: the broker returns the mandatory message, the handler raises,
    # tidings retries; once the queue exists the retry lands it, exactly once.
    publisher = RabbitPublisher(RabbitPublishConfig(routing_key=rabbit_queue, url=URL))
    q = app.queue("to-rabbit", max_attempts=50, backoff_base=0.05, backoff_cap=0.2)
    q.handler(publisher.handle)
    msg_id = await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.RETRIED, 1)
        await amqp.declare_queue(rabbit_queue)
        await recorder.wait_count(EventKind.ACKED, 1)
    await publisher.close()
    assert "NO_ROUTE" in (recorder.of(EventKind.RETRIED)[0].error or "")
    [landed] = await drain(amqp, rabbit_queue, 1)
    assert landed.message_id == msg_id
    declared = await amqp.declare_queue(rabbit_queue, passive=True)
    assert declared.declaration_result.message_count == 0
    assert (await q.stats()).dead == 0


async def test_rabbitmq_messages_reach_tidings_once_despite_redelivery(
        app: Tidings, recorder: Recorder, amqp: AbstractChannel, rabbit_queue: str) -> None:
    await amqp.declare_queue(rabbit_queue)
    target = app.queue("from-rabbit")
    handled = collect_payloads(target)
    await app.connect()
    for n, message_id in enumerate(["m-1", "m-2", "m-1"]):  # m-1 again: a redelivery
        await amqp.default_exchange.publish(
            aio_pika.Message(f'{{"n":{n}}}'.encode(), content_type="application/json",
                             message_id=message_id, correlation_id=f"c-{n}",
                             headers={"traceparent": "00-t-s-01"}),
            routing_key=rabbit_queue)
    consumer = RabbitConsumer(RabbitConsumeConfig(queue=rabbit_queue, url=URL), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=3)
    consumer.stop()
    await task
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2)
    assert sorted(p["n"] for p in handled) == [0, 1]
    assert (await target.stats()).depth == 0
    first = recorder.of(EventKind.ACKED)[0].message
    assert first is not None and first.headers["traceparent"] == "00-t-s-01"
    assert first.correlation_id in ("c-0", "c-1")
    assert first.idempotency_key in ("amqp:m-1", "amqp:m-2")
    declared = await amqp.declare_queue(rabbit_queue, passive=True)
    assert declared.declaration_result.message_count == 0  # every message was acked


async def test_a_message_tidings_cannot_store_stays_in_rabbitmq(
        app: Tidings, amqp: AbstractChannel, rabbit_queue: str) -> None:
    await amqp.declare_queue(rabbit_queue)
    target = app.queue("from-rabbit", max_depth=1)
    await target.publish("fills the queue")
    await amqp.default_exchange.publish(
        aio_pika.Message(b'"waiting"', content_type="application/json", message_id="w-1"),
        routing_key=rabbit_queue)
    consumer = RabbitConsumer(
        RabbitConsumeConfig(queue=rabbit_queue, url=URL, requeue_delay=0.01), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(requeued=1)
    consumer.stop()
    await task
    assert consumer.moved == 0
    declared = await amqp.declare_queue(rabbit_queue, passive=True)
    assert declared.declaration_result.message_count == 1  # handed back, not lost


async def test_a_body_that_can_never_be_stored_is_rejected_not_retried(
        app: Tidings, amqp: AbstractChannel, rabbit_queue: str) -> None:
    await amqp.declare_queue(rabbit_queue)
    target = app.queue("from-rabbit")
    await app.connect()
    await amqp.default_exchange.publish(
        aio_pika.Message(b"{not json", content_type="application/json", message_id="bad"),
        routing_key=rabbit_queue)
    consumer = RabbitConsumer(RabbitConsumeConfig(queue=rabbit_queue, url=URL), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(rejected=1)
    consumer.stop()
    await task
    assert (consumer.moved, consumer.requeued) == (0, 0)
    assert (await target.stats()).depth == 0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"routing_key": ""}, "routing_key"),
    ({"routing_key": "q", "url": "http://x"}, "url"),
    ({"routing_key": "q", "confirm_timeout": 0}, "confirm_timeout"),
    ({"routing_key": "q", "persistent": "yes"}, "persistent"),
])
def test_bad_publish_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RabbitPublishConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"queue": ""}, "queue"),
    ({"queue": "q", "prefetch": 1.5}, "prefetch"),
    ({"queue": "q", "requeue_delay": -1}, "requeue_delay"),
])
def test_bad_consume_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RabbitConsumeConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_the_password_never_shows_in_reprs() -> None:
    config = RabbitPublishConfig(routing_key="q", url="amqp://u:s3cret@host/")
    assert "s3cret" not in repr(config) + repr(RabbitPublisher(config))
    assert safe_url(config.url) == "amqp://u:***@host/"
