"""The one conformance suite every bridge passes, both directions: RabbitMQ, NATS
JetStream, Kafka (Tansu) and SQS (moto); see conformance_brokers.py for the adapters.

For each broker and each direction: the tidings id, headers, correlation id and
traceparent cross; the order of one stream is kept where the broker keeps it; and a
``tidings bridge`` process killed with SIGKILL mid-stream loses nothing: inbound, what the
dead bridge stored but had not acked comes again and is dropped by its key (no duplicate
in tidings); outbound, what it had sent but not acked in tidings is sent again, so the
broker may hold duplicates, at most the messages in flight at the kill (the bridge's
concurrency, times ten for the SQS batch sends).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker_helpers import kafka_servers  # noqa: F401 - a fixture
from conformance_brokers import Broker, Kafka, Nats, Rabbit, Sent, Sqs
from fault_helpers import ROOT, poll
from tidings import Message, Tidings
from tidings.core.bridge_settings import BridgeSettings
from tidings.integrations.bridges import inbound, outbound

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEADERS = {"traceparent": TRACE, "x-tenant": "acme"}
CONCURRENCY = 16  # of the outbound bridge process
APP = "tests.apps.conformance_app:app"
KEYS = {"rabbitmq": "amqp:", "nats": "nats:", "kafka": "kafka:", "sqs": "sqs:"}


@pytest.fixture(params=["rabbitmq", "nats", "kafka", "sqs"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    made: Broker
    if request.param == "kafka":
        made = Kafka(request.getfixturevalue("kafka_servers"))
    elif request.param == "sqs":
        made = Sqs(request.getfixturevalue("s3_endpoint"))
    else:
        made = Rabbit() if request.param == "rabbitmq" else Nats()
    await made.create()
    yield made
    await made.destroy()


def settings(broker: Broker) -> BridgeSettings:
    return BridgeSettings.model_validate({broker.name: broker.settings(), "concurrency": 1})


async def test_outbound_keeps_the_id_headers_and_order(
        make_app: Callable[..., Tidings], broker: Broker) -> None:
    app = make_app()
    publisher, batch = outbound(f"{broker.name}-out", settings(broker))
    q = app.queue("bridged")
    if batch:
        q.handler(publisher.handle_batch, batch_size=batch, concurrency=1)  # type: ignore[attr-defined]
    else:
        q.handler(publisher.handle, concurrency=1)
    ids = [await q.publish({"n": n}, correlation_id=f"c-{n}", priority="high",
                           headers={**HEADERS, "ordering_key": "one"}) for n in range(30)]
    async with app.worker():
        got = await broker.read(30)
    await publisher.close()
    assert sorted(g.id for g in got) == sorted(ids)
    if broker.ordered:
        assert [g.id for g in got] == ids and [g.body["n"] for g in got] == list(range(30))
    for g in got:
        n = g.body["n"]
        assert g.headers["correlation_id"] == f"c-{n}" and g.headers["traceparent"] == TRACE
        assert g.headers["x-tenant"] == "acme" and g.headers["tidings-priority"] == "high"


async def test_inbound_keeps_headers_order_and_keys_by_the_source_id(
        make_app: Callable[..., Tidings], broker: Broker) -> None:
    app = make_app()
    target = app.queue("bridged")
    seen: list[Message] = []
    done = asyncio.Event()

    def handle(msg: Message) -> None:
        seen.append(msg)
        if len(seen) == 30:
            done.set()

    target.handler(handle, concurrency=1)
    await app.connect()
    await broker.produce([Sent(f"src-{n}", {"n": n}, {**HEADERS, "correlation_id": f"c-{n}"})
                          for n in range(30)])
    consumer = inbound(f"{broker.name}-in", settings(broker), target)
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=30)  # type: ignore[attr-defined]
    consumer.stop()
    await task
    async with app.worker():
        await asyncio.wait_for(done.wait(), 30)
    numbers = [m.payload["n"] for m in seen]  # type: ignore[index]
    assert sorted(numbers) == list(range(30))
    if broker.ordered:
        assert numbers == list(range(30))
    for m in seen:
        n = m.payload["n"]  # type: ignore[index]
        assert m.correlation_id == f"c-{n}" and m.headers["traceparent"] == TRACE
        assert m.headers["x-tenant"] == "acme"
        key = m.idempotency_key or ""
        assert key.startswith(KEYS[broker.name])
        if broker.name in ("rabbitmq", "nats"):  # brokers whose messages carry our id
            assert key == f"{KEYS[broker.name]}src-{n}"
    assert await poll(broker.source_empty, 30, "the source to be fully acked")


def spawn(kind: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tidings", "bridge", kind, "--app", APP],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def bridge_env(app: Tidings, broker: Broker, redis_url: str) -> dict[str, str]:
    return {**os.environ, "TIDINGS_REDIS_URL": redis_url,
            "TIDINGS_KEY_PREFIX": app.settings.key_prefix, "TIDINGS_LOG_LEVEL": "WARNING",
            "TIDINGS_BRIDGE__CONCURRENCY": str(CONCURRENCY), **broker.env()}


def why(process: subprocess.Popen[bytes]) -> Callable[[], str]:
    def detail() -> str:
        if process.poll() is None:
            return " (the bridge is still running)"
        err = process.stderr.read()[-2000:] if process.stderr else b""
        return f" (the bridge exited {process.returncode}: {err!r})"
    return detail


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


async def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)  # a clean stop: it settles what it holds
    return await asyncio.to_thread(process.wait, 30)


async def test_inbound_bridge_killed_mid_stream_loses_and_doubles_nothing(
        make_app: Callable[..., Tidings], broker: Broker, redis_url: str) -> None:
    app = make_app()
    target = app.queue("bridged", visibility_timeout=2)
    await app.connect()
    await broker.produce([Sent(f"m-{n}", {"n": n}, dict(HEADERS)) for n in range(broker.count)])
    env = bridge_env(app, broker, redis_url)

    async def depth_at_least(count: int) -> bool:
        return (await target.stats()).depth >= count

    first = spawn(f"{broker.name}-in", env)
    try:
        await poll(lambda: depth_at_least(broker.count // 10), 60, "the first bridge to move some",
                   why(first))
    finally:
        kill(first)
    assert (await target.stats()).depth < broker.count  # killed mid-stream
    second = spawn(f"{broker.name}-in", env)
    try:
        await poll(lambda: depth_at_least(broker.count), 90, "every message in tidings",
                   why(second))
        await poll(broker.source_empty, 60, "the source to be fully acked", why(second))
    finally:
        code = await stop(second)
    assert code == 0
    assert (await target.stats()).depth == broker.count  # redeliveries were dropped by their key


async def test_outbound_bridge_killed_mid_stream_loses_nothing_within_the_bound(
        make_app: Callable[..., Tidings], broker: Broker, redis_url: str) -> None:
    app = make_app()
    source = app.queue("bridged", visibility_timeout=2)
    ids = await source.publish_many([{"n": n} for n in range(broker.count)])
    env = bridge_env(app, broker, redis_url)

    async def left() -> Any:
        stats = await source.stats()
        return stats.depth + stats.in_flight

    first = spawn(f"{broker.name}-out", env)
    try:
        await poll(lambda: _below(left, broker.count - broker.count // 10), 60,
                   "the first bridge to send some", why(first))
    finally:
        kill(first)
    assert await left() > 0  # killed mid-stream
    second = spawn(f"{broker.name}-out", env)
    try:
        await poll(lambda: _below(left, 1), 90, "every message sent and acked", why(second))
    finally:
        code = await stop(second)
    assert code == 0
    got = await broker.read(broker.count)
    got += await broker.read(broker.count, timeout=2)  # whatever duplicates there are
    assert {g.id for g in got} == set(ids)  # nothing lost
    bound = CONCURRENCY * (10 if broker.name == "sqs" else 1)
    assert len(got) - broker.count <= bound


async def _below(read: Callable[[], Any], count: int) -> bool:
    return bool(await read() < count)
