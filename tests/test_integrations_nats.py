"""The NATS JetStream bridge against the machine's NATS server (127.0.0.1:4222).

Every test uses its own stream (a unique name and subject), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.js.client import JetStreamContext

from conftest import Recorder, collect_payloads
from tidings import ConfigError, EventKind, Message, Tidings
from tidings.integrations.jetstream import (
    NatsConsumeConfig,
    NatsConsumer,
    NatsPublishConfig,
    NatsPublisher,
)

URL = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")


@dataclass
class Stream:
    js: JetStreamContext
    name: str
    subject: str


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    """A unique JetStream stream capturing one unique subject; deleted after the test."""
    client = await nats.connect(URL)
    js = client.jetstream()
    token = uuid.uuid4().hex[:12]
    made = Stream(js, f"tidings_test_{token}", f"tidings.test.{token}")
    await js.add_stream(name=made.name, subjects=[made.subject])
    yield made
    await js.delete_stream(made.name)
    await client.close()


async def test_tidings_messages_reach_jetstream_with_id_and_headers(
        app: Tidings, recorder: Recorder, stream: Stream) -> None:
    publisher = NatsPublisher(NatsPublishConfig(subject=stream.subject, stream=stream.name,
                                                url=URL))
    q = app.queue("to-nats")
    q.handler(publisher.handle)
    first = await q.publish({"to": "a@b.c"}, correlation_id="corr-1",
                            headers={"traceparent": "00-abc-def-01"}, priority="high")
    second = await q.publish(b"\x00raw")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2)
    await publisher.close()
    one = await stream.js.get_msg(stream.name, seq=1)
    two = await stream.js.get_msg(stream.name, seq=2)
    by_id = {m.headers["Nats-Msg-Id"]: m for m in (one, two) if m.headers}
    assert set(by_id) == {first, second}
    got = by_id[first]
    assert got.data == b'{"to":"a@b.c"}' and got.headers is not None
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["correlation_id"] == "corr-1"
    assert got.headers["traceparent"] == "00-abc-def-01"
    assert got.headers["tidings-priority"] == "high"
    assert by_id[second].data == b"\x00raw"


async def test_a_retried_publish_is_stored_once_by_the_stream(
        app: Tidings, recorder: Recorder, stream: Stream) -> None:
    # The first attempt stores the message and then fails (as if the PubAck were lost):
    # tidings retries with the same Nats-Msg-Id, and the stream drops the repeat.
    publisher = NatsPublisher(NatsPublishConfig(subject=stream.subject, url=URL))
    q = app.queue("to-nats", backoff_base=0.01, backoff_cap=0.05)
    calls = 0

    @q.handler
    async def forward(msg: Message) -> None:
        nonlocal calls
        calls += 1
        await publisher.handle(msg)
        if calls == 1:
            raise ConnectionError("PubAck lost")

    await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await publisher.close()
    assert calls == 2 and recorder.counts[EventKind.RETRIED] == 1
    info = await stream.js.stream_info(stream.name)
    assert info.state.messages == 1


async def test_a_publish_no_stream_captures_retries_and_then_dead_letters(
        app: Tidings, recorder: Recorder) -> None:
    publisher = NatsPublisher(NatsPublishConfig(subject=f"nowhere.{uuid.uuid4().hex}",
                                                url=URL, ack_timeout=2))
    q = app.queue("to-nats", max_attempts=2, backoff_base=0.01)
    q.handler(publisher.handle)
    msg_id = await q.publish("x")
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    await publisher.close()
    [dead] = await q.dlq.list()
    assert dead.message_id == msg_id and dead.error["type"] == "NoStreamResponseError"


async def test_jetstream_messages_reach_tidings_once_despite_redelivery(
        app: Tidings, recorder: Recorder, stream: Stream) -> None:
    target = app.queue("from-nats")
    handled = collect_payloads(target)
    await app.connect()
    for n in range(3):
        await stream.js.publish(stream.subject, f'{{"n":{n}}}'.encode(),
                                headers={"Content-Type": "application/json",
                                         "traceparent": f"00-t{n}-s-01"})
    config = NatsConsumeConfig(stream=stream.name, subject=stream.subject,
                               durable="bridge", url=URL, fetch_timeout=0.2)
    consumer = NatsConsumer(config, target)
    # A message stored in tidings whose ack never reached NATS comes again: the stream
    # sequence is its idempotency key, so the redelivery enqueues nothing.
    first = await stream.js.get_msg(stream.name, seq=1)
    await target.publish({"n": 0}, idempotency_key=f"nats:{stream.name}:{first.seq}")
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=3)
    consumer.stop()
    await task
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 3)
    assert sorted(p["n"] for p in handled) == [0, 1, 2]
    assert (await target.stats()).depth == 0
    headers = {e.message.headers.get("traceparent") for e in recorder.of(EventKind.ACKED)
               if e.message is not None}
    assert headers == {None, "00-t1-s-01", "00-t2-s-01"}  # n=0 is the copy stored before
    info = await stream.js.consumer_info(stream.name, "bridge")
    assert info.num_ack_pending == 0 and info.num_pending == 0  # all acked


async def test_a_batch_tidings_cannot_store_is_handed_back(
        app: Tidings, stream: Stream) -> None:
    target = app.queue("from-nats", max_depth=1)
    await target.publish("fills the queue")
    await stream.js.publish(stream.subject, b'"waiting"',
                            headers={"Content-Type": "application/json"})
    config = NatsConsumeConfig(stream=stream.name, subject=stream.subject, durable="bridge",
                               url=URL, fetch_timeout=0.2, nak_delay=30)
    consumer = NatsConsumer(config, target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(requeued=1)
    consumer.stop()
    await task
    assert consumer.moved == 0
    info = await stream.js.consumer_info(stream.name, "bridge")
    assert info.num_ack_pending + info.num_pending + info.num_redelivered >= 1  # not acked
    assert (await stream.js.stream_info(stream.name)).state.messages == 1


async def test_a_body_that_can_never_be_stored_is_terminated_not_retried(
        app: Tidings, stream: Stream) -> None:
    target = app.queue("from-nats")
    await app.connect()
    await stream.js.publish(stream.subject, b"{not json",
                            headers={"Content-Type": "application/json"})
    await stream.js.publish(stream.subject, b'"fine"',
                            headers={"Content-Type": "application/json"})
    config = NatsConsumeConfig(stream=stream.name, subject=stream.subject, durable="bridge",
                               url=URL, fetch_timeout=0.2)
    consumer = NatsConsumer(config, target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(rejected=1, moved=1)
    consumer.stop()
    await task
    assert consumer.requeued == 0
    assert (await target.stats()).depth == 1


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"subject": ""}, "subject"),
    ({"subject": "s", "url": "amqp://x"}, "url"),
    ({"subject": "s", "ack_timeout": -1}, "ack_timeout"),
    ({"subject": "s", "stream": ""}, "stream"),
])
def test_bad_publish_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NatsPublishConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"stream": "", "subject": "s", "durable": "d"}, "stream"),
    ({"stream": "x", "subject": "s", "durable": ""}, "durable"),
    ({"stream": "x", "subject": "s", "durable": "d", "batch": 0}, "batch"),
])
def test_bad_consume_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NatsConsumeConfig(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
