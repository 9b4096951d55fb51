"""One adapter per broker for the shared bridge conformance suite: each writes and reads
the broker with its own raw client, so the suite checks the bridge, not itself.

Every adapter makes its own queue / stream / topic and removes it after the test.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

AMQP = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")
JSON = "application/json"
GROUP = "tidings-bridge"  # the bridges' consumer group / durable (the settings' default)


@dataclass
class Sent:
    """A message written into a broker: its id, JSON body and headers."""

    id: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Got:
    """A message read from a broker: the tidings id it carried, body, headers."""

    id: str
    body: dict[str, Any]
    headers: dict[str, str]


def _text(headers: dict[str, Any]) -> dict[str, str]:
    return {str(k): v.decode() if isinstance(v, bytes) else str(v)
            for k, v in headers.items()}


class Broker:
    """What the suite needs of a broker (see the subclasses)."""

    name = ""
    ordered = True  # does it keep the order of one stream of messages?
    count = 1500  # messages per kill test

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:12]

    def settings(self) -> dict[str, Any]:  # this broker's TIDINGS_BRIDGE__<NAME> section
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        section = self.name.upper()
        return {f"TIDINGS_BRIDGE__{section}__{k.upper()}": str(v)
                for k, v in self.settings().items()}

    async def create(self) -> None: ...
    async def destroy(self) -> None: ...
    async def produce(self, items: list[Sent]) -> None: ...
    async def read(self, count: int, timeout: float = 60) -> list[Got]: ...
    async def source_empty(self) -> bool: ...


class Rabbit(Broker):
    name = "rabbitmq"

    def settings(self) -> dict[str, Any]:
        name = f"tidings-conf-{self.token}"
        return {"url": AMQP, "queue": name, "routing_key": name}

    async def create(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(AMQP)
        self.channel = await self.connection.channel()
        self.queue = await self.channel.declare_queue(self.settings()["queue"], durable=True)

    async def destroy(self) -> None:
        await self.channel.queue_delete(self.settings()["queue"])
        await self.connection.close()

    async def produce(self, items: list[Sent]) -> None:
        import aio_pika

        for item in items:
            headers = dict(item.headers)
            correlation = headers.pop("correlation_id", None)
            await self.channel.default_exchange.publish(aio_pika.Message(
                orjson.dumps(item.body), content_type=JSON, message_id=item.id,
                correlation_id=correlation, headers=headers),  # type: ignore[arg-type]
                routing_key=self.settings()["queue"])

    async def read(self, count: int, timeout: float = 60) -> list[Got]:
        got: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msg = await self.queue.get(no_ack=True, fail=False)
            if msg is None:
                await asyncio.sleep(0.05)
                continue
            headers = _text(msg.headers or {})
            if msg.correlation_id:
                headers["correlation_id"] = msg.correlation_id
            assert msg.message_id == headers["tidings-id"]  # the id is the AMQP message id
            got.append(Got(headers["tidings-id"], orjson.loads(msg.body), headers))
        return got

    async def source_empty(self) -> bool:
        queue = await self.channel.declare_queue(self.settings()["queue"], passive=True)
        return queue.declaration_result.message_count == 0


class Nats(Broker):
    name = "nats"

    def settings(self) -> dict[str, Any]:
        return {"url": NATS, "stream": f"tidings_conf_{self.token}",
                "subject": f"tidings.conf.{self.token}", "ack_wait": 2}

    async def create(self) -> None:
        import nats

        self.client = await nats.connect(NATS)
        self.js = self.client.jetstream()
        cfg = self.settings()
        await self.js.add_stream(name=cfg["stream"], subjects=[cfg["subject"]])
        self.reader: Any = None

    async def destroy(self) -> None:
        await self.js.delete_stream(self.settings()["stream"])
        await self.client.close()

    async def produce(self, items: list[Sent]) -> None:
        for item in items:
            await self.js.publish(self.settings()["subject"], orjson.dumps(item.body),
                                  headers={**item.headers, "Nats-Msg-Id": item.id,
                                           "Content-Type": JSON})

    async def read(self, count: int, timeout: float = 60) -> list[Got]:
        from nats.errors import TimeoutError as NatsTimeout

        if self.reader is None:
            self.reader = await self.js.pull_subscribe(self.settings()["subject"], "reader")
        got: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                batch = await self.reader.fetch(min(500, count - len(got)), timeout=1)
            except (NatsTimeout, TimeoutError):
                continue
            for msg in batch:
                await msg.ack()
                headers = _text(msg.headers or {})
                assert headers["Nats-Msg-Id"] == headers["tidings-id"]
                got.append(Got(headers["tidings-id"], orjson.loads(msg.data), headers))
        return got

    async def source_empty(self) -> bool:
        info = await self.js.consumer_info(self.settings()["stream"], GROUP)
        return info.num_pending == 0 and info.num_ack_pending == 0


class Kafka(Broker):
    name = "kafka"

    def __init__(self, servers: str) -> None:
        super().__init__()
        self.servers = servers

    def settings(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.servers, "topic": f"tidings-conf-{self.token}",
                "session_timeout": 1.5}

    async def create(self) -> None:
        from broker_helpers import create_topic

        await create_topic(self.servers, self.settings()["topic"], partitions=1)
        self.reader: Any = None
        self.produced = 0

    async def destroy(self) -> None:
        if self.reader is not None:
            await self.reader.stop()

    async def produce(self, items: list[Sent]) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.servers, acks="all")
        await producer.start()
        try:
            sends = [await producer.send(self.settings()["topic"], orjson.dumps(i.body),
                                         headers=[("content-type", JSON.encode()),
                                                  *((k, v.encode())
                                                    for k, v in i.headers.items())])
                     for i in items]
            await asyncio.gather(*sends)
            self.produced += len(items)
        finally:
            await producer.stop()

    async def read(self, count: int, timeout: float = 60) -> list[Got]:
        from aiokafka import AIOKafkaConsumer

        if self.reader is None:
            self.reader = AIOKafkaConsumer(
                self.settings()["topic"], bootstrap_servers=self.servers, group_id="reader",
                auto_offset_reset="earliest", session_timeout_ms=1000,
                heartbeat_interval_ms=100, rebalance_timeout_ms=1000)
            await self.reader.start()
        got: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for records in (await self.reader.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = _text(dict(r.headers))
                    got.append(Got(headers["tidings-id"], orjson.loads(r.value), headers))
        return got

    async def source_empty(self) -> bool:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.settings()["topic"], 0)
        probe = AIOKafkaConsumer(bootstrap_servers=self.servers, group_id=GROUP)
        await probe.start()
        try:
            # Tansu's ListOffsets answers the end of the last record batch oddly: count
            # what was produced instead.
            return bool(await probe.committed(tp) == self.produced)
        finally:
            await probe.stop()


class Sqs(Broker):
    name = "sqs"
    ordered = False  # a standard queue does not keep order (a FIFO queue would)
    count = 300  # moto scans the whole queue at every receive: keep it small

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint

    def settings(self) -> dict[str, Any]:
        return {"queue_url": self.url, "endpoint_url": self.endpoint, "wait": 1,
                "access_key_id": "testing", "secret_access_key": "testing",
                "visibility_timeout": 2}

    async def create(self) -> None:
        import contextlib

        from aiobotocore.session import get_session

        self.stack = contextlib.AsyncExitStack()
        self.sqs = await self.stack.enter_async_context(get_session().create_client(
            "sqs", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing"))
        self.url = (await self.sqs.create_queue(
            QueueName=f"tidings-conf-{self.token}"))["QueueUrl"]

    async def destroy(self) -> None:
        await self.sqs.delete_queue(QueueUrl=self.url)
        await self.stack.aclose()

    async def produce(self, items: list[Sent]) -> None:
        def attrs(item: Sent) -> dict[str, Any]:
            values = {"content-type": JSON, **item.headers}
            return {k: {"DataType": "String", "StringValue": v} for k, v in values.items()}

        for start in range(0, len(items), 10):
            await self.sqs.send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(n), "MessageBody": orjson.dumps(i.body).decode(),
                 "MessageAttributes": attrs(i)}
                for n, i in enumerate(items[start:start + 10])])

    async def read(self, count: int, timeout: float = 60) -> list[Got]:
        got: list[Got] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            answer = await self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                MessageAttributeNames=["All"])
            received = answer.get("Messages", [])
            for raw in received:
                headers = {k: v["StringValue"] for k, v in raw["MessageAttributes"].items()}
                got.append(Got(headers["tidings-id"], orjson.loads(raw["Body"]), headers))
            if received:
                await self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": r["ReceiptHandle"]}
                    for n, r in enumerate(received)])
        return got

    async def source_empty(self) -> bool:
        attrs = (await self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["All"]))["Attributes"]
        return (attrs["ApproximateNumberOfMessages"] == "0"
                and attrs["ApproximateNumberOfMessagesNotVisible"] == "0")
