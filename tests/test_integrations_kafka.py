"""The Kafka bridge against a real Kafka-protocol broker (Tansu, started per session on a
free port, memory-only), both directions. Every test uses its own topic."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError

from broker_helpers import create_topic, kafka_servers  # noqa: F401 - a fixture
from conftest import Recorder, collect_payloads
from tidings import ConfigError, EventKind, Tidings
from tidings.integrations.kafka import (
    KafkaConsumeConfig,
    KafkaConsumer,
    KafkaPublishConfig,
    KafkaPublisher,
)

FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100,
              "rebalance_timeout_ms": 1000}


@pytest.fixture
async def topic(kafka_servers: str) -> AsyncIterator[str]:  # noqa: F811
    name = f"tidings-{uuid.uuid4().hex[:12]}"
    await create_topic(kafka_servers, name, partitions=3)
    yield name


async def read(servers: str, topic: str, count: int) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                group_id=f"reader-{uuid.uuid4().hex[:8]}", **FAST_GROUP)
    await consumer.start()
    got: list[object] = []
    try:
        while len(got) < count:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got


async def test_tidings_messages_reach_kafka_keyed_with_headers_and_id(
        app: Tidings, recorder: Recorder, kafka_servers: str, topic: str) -> None:  # noqa: F811
    publisher = KafkaPublisher(KafkaPublishConfig(topic=topic, bootstrap_servers=kafka_servers))
    q = app.queue("to-kafka")
    q.handler(publisher.handle)
    first = await q.publish({"to": "a@b.c"}, correlation_id="corr-1", priority="high",
                            headers={"traceparent": "00-abc-def-01", "ordering_key": "user-7"})
    second = await q.publish(b"\x00raw", correlation_id="corr-2")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2)
    await publisher.close()
    got = {dict(r.headers)["tidings-id"].decode(): r for r in await read(kafka_servers, topic, 2)}
    assert set(got) == {first, second}
    one = dict(got[first].headers)
    assert got[first].value == b'{"to":"a@b.c"}' and one["content-type"] == b"application/json"
    assert one["traceparent"] == b"00-abc-def-01" and one["correlation_id"] == b"corr-1"
    assert one["tidings-priority"] == b"high"
    assert got[first].key == b"user-7"  # the ordering key wins over the correlation id
    assert got[second].key == b"corr-2" and got[second].value == b"\x00raw"


async def test_the_key_header_is_configurable_and_keeps_one_key_on_one_partition(
        app: Tidings, recorder: Recorder, kafka_servers: str, topic: str) -> None:  # noqa: F811
    publisher = KafkaPublisher(KafkaPublishConfig(topic=topic, bootstrap_servers=kafka_servers,
                                                  key_header="tenant"))
    q = app.queue("to-kafka")
    q.handler(publisher.handle, concurrency=1)
    for n in range(20):
        await q.publish({"n": n}, headers={"tenant": f"t{n % 2}"})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 20)
    await publisher.close()
    records = await read(kafka_servers, topic, 20)
    by_key: dict[bytes, set[int]] = {}
    order: dict[bytes, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):  # type: ignore[attr-defined]
        by_key.setdefault(r.key, set()).add(r.partition)  # type: ignore[attr-defined]
        order.setdefault(r.key, []).append(int(r.value.decode().split(":")[1][:-1]))  # type: ignore[attr-defined]
    assert set(by_key) == {b"t0", b"t1"} and all(len(p) == 1 for p in by_key.values())
    assert order[b"t0"] == list(range(0, 20, 2)) and order[b"t1"] == list(range(1, 20, 2))


async def produce(servers: str, topic: str, values: list[bytes],
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k", headers=headers or [])
    finally:
        await producer.stop()


async def test_kafka_records_reach_tidings_and_offsets_commit_after_the_publish(
        app: Tidings, recorder: Recorder, kafka_servers: str, topic: str) -> None:  # noqa: F811
    await produce(kafka_servers, topic, [f'{{"n":{n}}}'.encode() for n in range(5)],
                  [("content-type", b"application/json"), ("traceparent", b"00-t-s-01"),
                   ("correlation_id", b"c-1")])
    target = app.queue("from-kafka")
    handled = collect_payloads(target)
    await app.connect()
    config = KafkaConsumeConfig(topic=topic, group="g", bootstrap_servers=kafka_servers,
                                poll_timeout=0.2, session_timeout=1)
    consumer = KafkaConsumer(config, target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=5)
    consumer.stop()
    await task
    # The group's committed offsets cover every record: a restart reads nothing again.
    group = AIOKafkaConsumer(bootstrap_servers=kafka_servers, group_id="g")
    await group.start()
    committed = [await group.committed(TopicPartition(topic, p)) for p in range(3)]
    await group.stop()
    assert sum(c or 0 for c in committed) == 5
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 5)
    assert [p["n"] for p in handled] == [0, 1, 2, 3, 4]  # one partition keeps the order
    msg = recorder.of(EventKind.ACKED)[0].message
    assert msg is not None and msg.headers["traceparent"] == "00-t-s-01"
    assert msg.correlation_id == "c-1"
    assert re.fullmatch(rf"kafka:{topic}:[0-2]:0", msg.idempotency_key or "")
    assert (await target.stats()).depth == 0


async def test_a_reread_after_a_failed_commit_is_dropped_by_its_key(
        app: Tidings, kafka_servers: str, topic: str) -> None:  # noqa: F811
    await produce(kafka_servers, topic, [b'"a"', b'"b"'], [("content-type", b"application/json")])
    target = app.queue("from-kafka")
    await app.connect()
    config = KafkaConsumeConfig(topic=topic, group="g", bootstrap_servers=kafka_servers,
                                poll_timeout=0.2, session_timeout=1)
    first = KafkaConsumer(config, target)

    async def no_commit(*args: object, **kwargs: object) -> None:
        raise CommitFailedError("the group rebalanced before the commit")

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_servers, group_id="g",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **FAST_GROUP)
    await consumer.start()
    batch = await consumer.getmany(timeout_ms=5000)
    consumer.commit = no_commit  # type: ignore[method-assign]
    await first.handle_batch(consumer, batch)  # logged, not raised: the records are stored
    await consumer.stop()
    assert (await target.stats()).depth == 2  # stored, not committed
    second = KafkaConsumer(config, target)
    task = asyncio.create_task(second.run())
    await second.wait_until(moved=2)
    second.stop()
    await task
    assert (await target.stats()).depth == 2  # the re-read was dropped by its key


async def test_a_batch_tidings_cannot_store_is_read_again_not_committed(
        app: Tidings, kafka_servers: str, topic: str) -> None:  # noqa: F811
    await produce(kafka_servers, topic, [b'"waiting"'], [("content-type", b"application/json")])
    target = app.queue("from-kafka", max_depth=1)
    await target.publish("fills the queue")
    config = KafkaConsumeConfig(topic=topic, group="g", bootstrap_servers=kafka_servers,
                                poll_timeout=0.2, session_timeout=1, retry_delay=0.01)
    consumer = KafkaConsumer(config, target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(requeued=2)  # read, refused, read again, refused
    consumer.stop()
    await task
    assert consumer.moved == 0 and (await target.stats()).depth == 1


async def test_a_record_that_can_never_be_stored_is_skipped_and_the_rest_arrive(
        app: Tidings, kafka_servers: str, topic: str) -> None:  # noqa: F811
    await produce(kafka_servers, topic, [b"{not json", b'"fine"'],
                  [("content-type", b"application/json")])
    target = app.queue("from-kafka")
    await app.connect()
    consumer = KafkaConsumer(KafkaConsumeConfig(
        topic=topic, group="g", poll_timeout=0.2, session_timeout=1,
        bootstrap_servers=kafka_servers), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=1, rejected=1)
    consumer.stop()
    await task
    assert (await target.stats()).depth == 1


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"topic": ""}, "topic"),
    ({"topic": "t", "bootstrap_servers": "nohost"}, "bootstrap_servers"),
    ({"topic": "t", "send_timeout": 0}, "send_timeout"),
    ({"topic": "t", "key_header": ""}, "key_header"),
    ({"topic": "t", "linger_ms": -1}, "linger_ms"),
])
def test_bad_publish_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaPublishConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"topic": "t", "group": ""}, "group"),
    ({"topic": "t", "group": "g", "batch": 0}, "batch"),
    ({"topic": "t", "group": "g", "start": "middle"}, "start"),
])
def test_bad_consume_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KafkaConsumeConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
