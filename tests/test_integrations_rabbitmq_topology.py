"""Declaring RabbitMQ topology from configuration (quorum queues, dead-letter exchange,
bindings) and AMQP priorities, against the machine's RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from conftest import Recorder
from tidings import ConfigError, EventKind, Tidings
from tidings.integrations.rabbitmq import (
    RabbitConsumeConfig,
    RabbitConsumer,
    RabbitPublishConfig,
    RabbitPublisher,
)
from tidings.integrations.rabbitmq_topology import RabbitTopology, declare

URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(URL)
    yield await connection.channel()
    await connection.close()


@pytest.fixture
async def names(amqp: AbstractChannel) -> AsyncIterator[dict[str, str]]:
    token = uuid.uuid4().hex[:12]
    names = {"queue": f"tidings-topo-{token}", "exchange": f"tidings-x-{token}",
             "dlx": f"tidings-dlx-{token}"}
    yield names
    for queue in (names["queue"], f"{names['queue']}.dead"):
        await amqp.queue_delete(queue, if_unused=False, if_empty=False)
    for exchange in (names["exchange"], names["dlx"]):
        await amqp.exchange_delete(exchange)


async def test_declared_quorum_topology_routes_and_dead_letters(
        app: Tidings, recorder: Recorder, amqp: AbstractChannel,
        names: dict[str, str]) -> None:
    topology = RabbitTopology(queue=names["queue"], exchange=names["exchange"],
                              exchange_type="topic", routing_keys=("notify.*",),
                              dead_letter_exchange=names["dlx"], url=URL)
    await declare(topology)
    await declare(topology)  # idempotent: a second start declares the same again
    publisher = RabbitPublisher(RabbitPublishConfig(
        exchange=names["exchange"], routing_key="notify.email", url=URL))
    q = app.queue("to-rabbit")
    q.handler(publisher.handle)
    await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await publisher.close()
    declared = await amqp.declare_queue(names["queue"], passive=True)
    assert declared.declaration_result.message_count == 1
    # A body that can never be stored is rejected by the consumer: it lands in QUEUE.dead.
    await amqp.default_exchange.publish(
        aio_pika.Message(b"{not json", content_type="application/json", message_id="bad"),
        routing_key=names["queue"])
    consumer = RabbitConsumer(RabbitConsumeConfig(queue=names["queue"], url=URL),
                              app.queue("from-rabbit"))
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=1, rejected=1)
    consumer.stop()
    await task
    dead = await amqp.declare_queue(f"{names['queue']}.dead", passive=True)
    assert dead.declaration_result.message_count == 1
    assert (await app.queue("from-rabbit").stats()).depth == 1


async def test_a_queue_declared_with_other_arguments_is_refused_not_changed(
        amqp: AbstractChannel, names: dict[str, str]) -> None:
    await declare(RabbitTopology(queue=names["queue"], queue_type="classic", url=URL))
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await declare(RabbitTopology(queue=names["queue"], url=URL))


async def test_a_classic_priority_queue_delivers_high_priority_first(
        app: Tidings, recorder: Recorder, amqp: AbstractChannel,
        names: dict[str, str]) -> None:
    await declare(RabbitTopology(queue=names["queue"], queue_type="classic", max_priority=9,
                                 url=URL))
    publisher = RabbitPublisher(RabbitPublishConfig(routing_key=names["queue"], url=URL))
    q = app.queue("to-rabbit")
    q.handler(publisher.handle, concurrency=1)
    for n in range(3):
        await q.publish({"n": n}, priority="low")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 3)
        await q.publish({"n": "urgent"}, priority="high")
        await recorder.wait_count(EventKind.ACKED, 4)
    await publisher.close()
    queue = await amqp.get_queue(names["queue"])
    first = await queue.get(no_ack=True)
    assert first is not None and first.body == b'{"n":"urgent"}' and first.priority == 9


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"queue": "q", "max_priority": 5}, "max_priority"),  # quorum: no x-max-priority
    ({"queue": "q", "queue_type": "classic", "max_priority": 300}, "max_priority"),
    ({"queue": "q", "queue_type": "classic", "delivery_limit": 3}, "delivery_limit"),
    ({"queue": "q", "queue_type": "stream"}, "queue_type"),
    ({"queue": "q", "exchange_type": "round-robin"}, "exchange_type"),
    ({"queue": ""}, "queue"),
])
def test_bad_topology_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RabbitTopology(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_quorum_arguments_carry_the_delivery_limit_and_dead_letter_exchange() -> None:
    topology = RabbitTopology(queue="q", dead_letter_exchange="dlx", delivery_limit=5)
    assert topology.arguments() == {"x-queue-type": "quorum", "x-dead-letter-exchange": "dlx",
                                    "x-delivery-limit": 5}
