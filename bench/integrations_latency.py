"""The latency rows of ``python -m bench.integrations`` (``--only-latency`` runs just
them): what each bridge adds to one message's trip, inbound (``*_in``) and outbound
(``*_out``: a tidings publish, the worker's fetch, the publisher handler's confirmed
broker publish, then the same raw consumer).

At a low rate (``--latency-messages`` messages, one every ``--latency-interval`` s), the
raw client publishes to the broker; the time from that publish to the tidings handler
seeing the message (bridge: poll, ``publish_many``, ack, then the tidings worker's fetch)
is set beside the time from the same publish to a raw consumer of the same client seeing
it (poll and ack, nothing stored). One warm-up message is moved before the timed ones (a
Kafka group must first be joined). Medians and 95th percentiles in milliseconds; the
sides alternate over ``--rounds`` rounds. RabbitMQ and NATS are the machine's; Tansu and
moto are started by bench/integrations_brokers.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import nats
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from tidings import Message, Tidings
from tidings.integrations.aws import AwsConnection
from tidings.integrations.jetstream import (
    NatsConsumeConfig,
    NatsConsumer,
    NatsPublishConfig,
    NatsPublisher,
)
from tidings.integrations.kafka import (
    KafkaConsumeConfig,
    KafkaConsumer,
    KafkaPublishConfig,
    KafkaPublisher,
)
from tidings.integrations.rabbitmq import (
    RabbitConsumeConfig,
    RabbitConsumer,
    RabbitPublishConfig,
    RabbitPublisher,
)
from tidings.integrations.sqs import (
    SqsConsumeConfig,
    SqsConsumer,
    SqsPublishConfig,
    SqsPublisher,
)

from .stats import median, rounded

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"
Send = Callable[[bytes], Awaitable[None]]
Seen = Callable[[dict[str, Any]], None]  # called with each decoded body at its arrival
Trips = Callable[[], Awaitable[list[float]]]
Sides = tuple[Trips, Trips, Trips, Callable[[], Awaitable[None]]]  # in, out, raw, close


class Trip:
    """Latencies of ``count`` timed messages (after the warm-up ``n = -1``); messages of
    another trip (a consumer reading from the start of a shared stream) are ignored."""

    def __init__(self, count: int) -> None:
        self.count, self.ms = count, []  # type: list[float]
        self.warm, self.done = asyncio.Event(), asyncio.Event()
        self.trip = uuid.uuid4().hex

    def body(self, n: int) -> bytes:
        return json.dumps({"n": n, "t": time.perf_counter(), "trip": self.trip}).encode()

    def seen(self, doc: dict[str, Any]) -> None:
        if doc.get("trip") != self.trip:
            return
        if doc["n"] < 0:
            self.warm.set()
            return
        self.ms.append((time.perf_counter() - doc["t"]) * 1000)
        if len(self.ms) >= self.count:
            self.done.set()

    async def run(self, send: Send, interval: float) -> list[float]:
        await send(self.body(-1))
        await asyncio.wait_for(self.warm.wait(), 60)
        for n in range(self.count):
            await send(self.body(n))
            await asyncio.sleep(interval)
        await asyncio.wait_for(self.done.wait(), 60)
        return self.ms


async def drop_prefix(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def out_through_bridge(url: str, publisher: Any,
                             consume: Callable[[Seen, asyncio.Event], Awaitable[None]],
                             count: int, interval: float) -> list[float]:
    """Latencies from a tidings publish to the raw consumer, via ``publisher``'s handler."""
    prefix, trip, stop = f"bench{uuid.uuid4().hex[:8]}", Trip(count), asyncio.Event()
    try:
        async with Tidings(url, key_prefix=prefix) as app:
            out = app.queue("out")
            out.handler(publisher.handle)

            async def send(data: bytes) -> None:
                await out.publish(json.loads(data))

            task = asyncio.create_task(consume(trip.seen, stop))
            try:
                async with app.worker(["out"]):
                    return await trip.run(send, interval)
            finally:
                stop.set()
                await task
                await publisher.close()
    finally:
        await drop_prefix(url, prefix)


async def through_bridge(url: str, make: Callable[[Any], Any], send: Send, count: int,
                         interval: float) -> list[float]:
    """Latencies from the broker publish to the tidings handler, via the bridge ``make``."""
    prefix, trip = f"bench{uuid.uuid4().hex[:8]}", Trip(count)
    try:
        async with Tidings(url, key_prefix=prefix) as app:
            target = app.queue("in")

            @target.handler
            async def handle(msg: Message) -> None:
                trip.seen(msg.payload)

            consumer = make(target)
            task = asyncio.create_task(consumer.run())
            async with app.worker(["in"]):
                ms = await trip.run(send, interval)
            consumer.stop()
            await task
            return ms
    finally:
        await drop_prefix(url, prefix)


async def raw(consume: Callable[[Seen, asyncio.Event], Awaitable[None]], send: Send,
              count: int, interval: float) -> list[float]:
    trip, stop = Trip(count), asyncio.Event()
    task = asyncio.create_task(consume(trip.seen, stop))
    try:
        return await trip.run(send, interval)
    finally:
        stop.set()
        await task


async def nats_sides(url: str, count: int, interval: float) -> Sides:
    client = await nats.connect(NATS)
    js = client.jetstream()
    token = uuid.uuid4().hex[:10]
    stream, subject = f"bench_lat_{token}", f"bench.lat.{token}"
    await js.add_stream(name=stream, subjects=[subject])

    async def send(data: bytes) -> None:
        await js.publish(subject, data, headers={"Content-Type": "application/json"})

    async def bridge() -> list[float]:
        return await through_bridge(url, lambda q: NatsConsumer(NatsConsumeConfig(
            stream=stream, subject=subject, durable=f"b{uuid.uuid4().hex[:8]}", url=NATS,
            fetch_timeout=0.5), q), send, count, interval)

    async def consume(seen: Seen, stop: asyncio.Event) -> None:
        sub = await js.pull_subscribe(subject, durable=f"r{uuid.uuid4().hex[:8]}",
                                      stream=stream)
        while not stop.is_set():
            try:
                got = await sub.fetch(64, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in got:
                await msg.ack_sync()
                seen(json.loads(msg.data))

    async def close() -> None:
        await js.delete_stream(stream)
        await client.close()

    async def bridge_out() -> list[float]:
        return await out_through_bridge(url, NatsPublisher(NatsPublishConfig(
            subject=subject, stream=stream, url=NATS)), consume, count, interval)

    return bridge, bridge_out, lambda: raw(consume, send, count, interval), close


async def rabbit_sides(url: str, count: int, interval: float) -> Sides:
    conn = await aio_pika.connect_robust(AMQP)
    channel = await conn.channel()
    name = f"bench-lat-{uuid.uuid4().hex[:10]}"
    queue = await channel.declare_queue(name, auto_delete=False)

    async def send(data: bytes) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(data, content_type="application/json",
                             message_id=uuid.uuid4().hex), routing_key=name)

    async def bridge() -> list[float]:
        return await through_bridge(url, lambda q: RabbitConsumer(
            RabbitConsumeConfig(queue=name, url=AMQP), q), send, count, interval)

    async def consume(seen: Seen, stop: asyncio.Event) -> None:
        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            await msg.ack()
            seen(json.loads(msg.body))

        tag = await queue.consume(on)
        await stop.wait()
        await queue.cancel(tag)

    async def close() -> None:
        await queue.delete(if_unused=False, if_empty=False)
        await conn.close()

    async def bridge_out() -> list[float]:
        return await out_through_bridge(url, RabbitPublisher(RabbitPublishConfig(
            routing_key=name, url=AMQP)), consume, count, interval)

    return bridge, bridge_out, lambda: raw(consume, send, count, interval), close


async def kafka_sides(url: str, servers: str, count: int, interval: float) -> Sides:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"lat-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()

    async def send(data: bytes) -> None:
        await producer.send_and_wait(topic, data,
                                     headers=[("content-type", b"application/json")])

    async def bridge() -> list[float]:
        return await through_bridge(url, lambda q: KafkaConsumer(KafkaConsumeConfig(
            topic=topic, group=f"b{uuid.uuid4().hex[:8]}", bootstrap_servers=servers,
            poll_timeout=0.2, session_timeout=1), q), send, count, interval)

    async def consume(seen: Seen, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers,
                                    auto_offset_reset="earliest",
                                    group_id=f"r{uuid.uuid4().hex[:8]}",
                                    enable_auto_commit=False, session_timeout_ms=1000,
                                    heartbeat_interval_ms=100, rebalance_timeout_ms=1000)
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if batch:
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
                    for records in batch.values():
                        for record in records:
                            seen(json.loads(record.value or b"{}"))
        finally:
            await consumer.stop()

    async def bridge_out() -> list[float]:
        return await out_through_bridge(url, KafkaPublisher(KafkaPublishConfig(
            topic=topic, bootstrap_servers=servers)), consume, count, interval)

    return bridge, bridge_out, lambda: raw(consume, send, count, interval), producer.stop


async def sqs_sides(url: str, endpoint: str, count: int, interval: float) -> Sides:
    aws = AwsConnection(endpoint_url=endpoint, access_key_id="bench",
                        secret_access_key="bench")
    stack = aws.client("sqs")
    sqs = await stack.__aenter__()
    queue_url = (await sqs.create_queue(QueueName=f"lat-{uuid.uuid4().hex[:10]}"))["QueueUrl"]
    attrs = {"content-type": {"DataType": "String", "StringValue": "application/json"}}

    async def send(data: bytes) -> None:
        await sqs.send_message(QueueUrl=queue_url, MessageBody=data.decode(),
                               MessageAttributes=attrs)

    async def bridge() -> list[float]:
        return await through_bridge(url, lambda q: SqsConsumer(SqsConsumeConfig(
            queue_url=queue_url, connection=aws, wait=1, pollers=1), q), send, count,
            interval)

    async def consume(seen: Seen, stop: asyncio.Event) -> None:
        while not stop.is_set():
            answer = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1, MessageAttributeNames=["All"])
            got = answer.get("Messages", [])
            if got:
                await sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(got)])
                for m in got:
                    seen(json.loads(m["Body"]))

    async def close() -> None:
        await sqs.delete_queue(QueueUrl=queue_url)
        await stack.__aexit__(None, None, None)

    async def bridge_out() -> list[float]:
        return await out_through_bridge(url, SqsPublisher(SqsPublishConfig(
            queue_url=queue_url, connection=aws)), consume, count, interval)

    return bridge, bridge_out, lambda: raw(consume, send, count, interval), close


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def row(bridge: list[float], raw_ms: list[float]) -> dict[str, Any]:
    b, w = median(bridge), median(raw_ms)
    return {"messages": len(bridge), "bridge_ms_p50": rounded(b, 2),
            "raw_ms_p50": rounded(w, 2), "added_ms_p50": rounded(b - w, 2),
            "bridge_ms_p95": rounded(p95(bridge), 2), "raw_ms_p95": rounded(p95(raw_ms), 2)}


async def compare(name: str, sides: Sides, rounds: int) -> dict[str, Any]:
    """``{name_in: ..., name_out: ...}``: both bridges beside the same raw trips, the
    three sides in a rotating order over ``rounds``."""
    bridge_in, bridge_out, raw_side, close = sides
    got: dict[str, list[float]] = {"in": [], "out": [], "raw": []}
    order = [("in", bridge_in), ("out", bridge_out), ("raw", raw_side)]
    try:
        for r in range(rounds):
            for side, run in order[r % 3:] + order[:r % 3]:
                got[side].extend(await run())
    finally:
        await close()
    return {f"{name}_in": row(got["in"], got["raw"]),
            f"{name}_out": row(got["out"], got["raw"])}


async def latency_rows(url: str, count: int, interval: float, rounds: int) -> dict[str, Any]:
    """``{"rabbitmq_in": {...}, "rabbitmq_out": ..., "nats_in": ..., ..., "sqs_out": ...}``."""
    from . import integrations_brokers as more

    rows: dict[str, Any] = {"interval_s": interval}
    rows |= await compare("rabbitmq", await rabbit_sides(url, count, interval), rounds)
    rows |= await compare("nats", await nats_sides(url, count, interval), rounds)
    async with more.brokers() as (servers, endpoint):
        rows |= await compare("kafka", await kafka_sides(url, servers, count, interval),
                              rounds)
        rows |= await compare("sqs", await sqs_sides(url, endpoint, count, interval), rounds)
    return rows
