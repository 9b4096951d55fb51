"""``python -m bench.integrations``: bridge throughput beside the raw client doing the same
publish, in the same run, printed as JSON (and written to bench/results/integrations.json).

* ``rabbitmq_out`` / ``nats_out``: N tidings messages drained by a worker whose handler is
  the bridge's publisher (one confirmed publish per message, ``concurrency`` at a time),
  against the raw client publishing the same N bodies with the same confirms and
  concurrency. The tidings side adds the fetch, the handler call and the ack.
* ``rabbitmq_in`` / ``nats_in``: N messages waiting in the broker moved into a tidings
  queue by the bridge's consumer (ack after the tidings publish), against the raw client
  consuming and acking the same N without storing them anywhere.
* ``webhook``: N messages delivered by the webhook consumer to a local aiohttp endpoint,
  against raw httpx POSTs of the same bodies with the same concurrency
  (``--webhook-concurrency``, default 8).
* ``email``, ``sms``, ``push``, ``webhook_subscribers``: the channel consumers against
  their local fake providers, beside the raw client (bench/channels.py; ``--channel-*``).

* ``kafka_*`` / ``sqs_*``: see bench/integrations_brokers.py (Tansu and moto are started
  by the benchmark itself).
* ``latency``: what each bridge (in and out) adds to a message's trip at a low rate, against
  the raw consumer (bench/integrations_latency.py; ``--only-latency``).

Each measurement alternates the sides over ``--rounds`` rounds and reports the medians.
Needs Redis (``--redis-url``), RabbitMQ and NATS with JetStream on their default ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import httpx
import nats
from aiohttp import web
from redis.asyncio import Redis

from tidings import Event, EventKind, Middleware, Tidings
from tidings.integrations.jetstream import (
    NatsConsumeConfig,
    NatsConsumer,
    NatsPublishConfig,
    NatsPublisher,
)
from tidings.integrations.rabbitmq import (
    RabbitConsumeConfig,
    RabbitConsumer,
    RabbitPublishConfig,
    RabbitPublisher,
)
from tidings.integrations.webhook import WebhookConfig, WebhookConsumer

from .stats import RESULTS, median, ratio, rounded

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
NATS = "nats://127.0.0.1:4222"
BODY = {"to": "user@example.com", "template": "welcome", "vars": {"name": "Ada"}}
Side = Callable[[int], Awaitable[float]]  # runs n messages, returns seconds
CLOSERS: list[Callable[[], Awaitable[Any]]] = []  # the raw clients, closed at the end


class Acks(Middleware):
    """Sets ``done`` once ``target`` messages were acked."""

    def __init__(self, target: int) -> None:
        self.target, self.count, self.done = target, 0, asyncio.Event()

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.ACKED:
            self.count += 1
            if self.count >= self.target:
                self.done.set()



async def _time_consumer(consumer: Any, n: int) -> float:
    """Seconds an inbound bridge takes to move ``n`` messages into tidings."""
    start = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    await consumer.wait_until(moved=n, timeout=600)
    elapsed = time.perf_counter() - start
    consumer.stop()
    await task
    return elapsed

async def drop(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])
    await client.aclose()


async def through_tidings(url: str, n: int, concurrency: int,
                          make: Callable[[], Any]) -> float:
    """Seconds for a worker to drain n messages through the handler ``make()`` returns
    (an object with ``handle`` and ``close``)."""
    prefix, acks = f"bench{uuid.uuid4().hex[:8]}", Acks(n)
    app = Tidings(url, key_prefix=prefix, middleware=[acks])
    bridge = make()
    q = app.queue("out")
    q.handler(concurrency=concurrency)(bridge.handle)
    try:
        async with app:
            await q.publish_many([BODY] * n)
            start = time.perf_counter()
            async with app.worker(concurrency=concurrency):
                await asyncio.wait_for(acks.done.wait(), 600)
            return time.perf_counter() - start
    finally:
        await bridge.close()
        await drop(url, prefix)


async def bounded(n: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> float:
    limit = asyncio.Semaphore(concurrency)

    async def run(i: int) -> None:
        async with limit:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    return time.perf_counter() - start


# -- RabbitMQ ------------------------------------------------------------------------------


async def rabbit_sides(url: str, concurrency: int) -> tuple[Side, Side, Side, Side]:
    connection = await aio_pika.connect(AMQP)
    CLOSERS.append(connection.close)
    channel = await connection.channel(publisher_confirms=True)
    body = json.dumps(BODY).encode()

    async def fresh() -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        await channel.declare_queue(name, durable=True)
        return name

    async def out_bridge(n: int) -> float:
        name = await fresh()
        try:
            return await through_tidings(url, n, concurrency, lambda: RabbitPublisher(
                RabbitPublishConfig(routing_key=name, url=AMQP)))
        finally:
            await channel.queue_delete(name)

    async def out_raw(n: int) -> float:
        name = await fresh()
        try:
            return await bounded(n, concurrency, lambda i: channel.default_exchange.publish(
                aio_pika.Message(body, message_id=str(i),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT), name))
        finally:
            await channel.queue_delete(name)

    async def loaded(n: int) -> str:
        name = await fresh()
        await bounded(n, 256, lambda i: channel.default_exchange.publish(
            aio_pika.Message(body, content_type="application/json", message_id=str(i)), name))
        return name

    async def in_bridge(n: int) -> float:
        name, prefix = await loaded(n), f"bench{uuid.uuid4().hex[:8]}"
        app = Tidings(url, key_prefix=prefix)
        try:
            async with app:
                consumer = RabbitConsumer(RabbitConsumeConfig(
                    queue=name, url=AMQP, prefetch=concurrency), app.queue("in"))
                return await _time_consumer(consumer, n)
        finally:
            await channel.queue_delete(name)
            await drop(url, prefix)

    async def in_raw(n: int) -> float:
        name = await loaded(n)
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=concurrency)
        queue = await consume.get_queue(name)
        done, count = asyncio.Event(), 0

        async def on(message: Any) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count >= n:
                done.set()

        start = time.perf_counter()
        await queue.consume(on)
        await asyncio.wait_for(done.wait(), 600)
        elapsed = time.perf_counter() - start
        await consume.close()
        await channel.queue_delete(name)
        return elapsed

    return out_bridge, out_raw, in_bridge, in_raw


# -- NATS JetStream ------------------------------------------------------------------------


async def nats_sides(url: str, concurrency: int) -> tuple[Side, Side, Side, Side]:
    client = await nats.connect(NATS)
    CLOSERS.append(client.close)
    js = client.jetstream()
    body = json.dumps(BODY).encode()

    async def fresh() -> tuple[str, str]:
        token = uuid.uuid4().hex[:8]
        name, subject = f"bench_{token}", f"bench.{token}"
        await js.add_stream(name=name, subjects=[subject])
        return name, subject

    async def out_bridge(n: int) -> float:
        name, subject = await fresh()
        try:
            return await through_tidings(url, n, concurrency, lambda: NatsPublisher(
                NatsPublishConfig(subject=subject, url=NATS)))
        finally:
            await js.delete_stream(name)

    async def out_raw(n: int) -> float:
        name, subject = await fresh()
        try:
            return await bounded(n, concurrency, lambda i: js.publish(
                subject, body, headers={"Nats-Msg-Id": str(i)}))
        finally:
            await js.delete_stream(name)

    async def loaded(n: int) -> tuple[str, str]:
        name, subject = await fresh()
        await bounded(n, 256, lambda i: js.publish(
            subject, body, headers={"Content-Type": "application/json"}))
        return name, subject

    async def in_bridge(n: int) -> float:
        (name, subject), prefix = await loaded(n), f"bench{uuid.uuid4().hex[:8]}"
        app = Tidings(url, key_prefix=prefix)
        try:
            async with app:
                consumer = NatsConsumer(NatsConsumeConfig(
                    stream=name, subject=subject, durable="bench", url=NATS,
                    batch=concurrency, fetch_timeout=0.5), app.queue("in"))
                return await _time_consumer(consumer, n)
        finally:
            await js.delete_stream(name)
            await drop(url, prefix)

    async def in_raw(n: int) -> float:
        name, subject = await loaded(n)
        sub = await js.pull_subscribe(subject, durable="bench", stream=name)
        start, count = time.perf_counter(), 0
        while count < n:
            batch = await sub.fetch(concurrency, timeout=5)
            await asyncio.gather(*(msg.ack_sync() for msg in batch))
            count += len(batch)
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()
        await js.delete_stream(name)
        return elapsed

    return out_bridge, out_raw, in_bridge, in_raw


# -- webhook -------------------------------------------------------------------------------


async def webhook_sides(url: str, concurrency: int) -> tuple[Side, Side, web.AppRunner]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    server = web.Application()
    server.router.add_post("/hook", ok)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    config = WebhookConfig(url=hook, secret="bench-secret", allow_http=True)

    async def bridge(n: int) -> float:
        return await through_tidings(url, n, concurrency, lambda: WebhookConsumer(config))

    async def raw(n: int) -> float:
        body = json.dumps(BODY).encode()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits) as client:
            return await bounded(n, concurrency, lambda i: client.post(
                hook, content=body, headers={"content-type": "application/json"}))

    return bridge, raw, runner


async def compare(bridge: Side, raw: Side, n: int, rounds: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"bridge": [], "raw": []}
    for r in range(rounds):
        order = [("bridge", bridge), ("raw", raw)]
        for name, side in order if r % 2 == 0 else order[::-1]:
            times[name].append(await side(n))
    bridge_rate, raw_rate = n / median(times["bridge"]), n / median(times["raw"])
    return {"messages": n, "bridge_msg_s": round(bridge_rate), "raw_msg_s": round(raw_rate),
            "bridge_vs_raw": rounded(ratio(bridge_rate, raw_rate))}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n, c, rounds = args.messages, args.concurrency, args.rounds
    results: dict[str, Any] = {"concurrency": c, "rounds": rounds}
    r_out, r_out_raw, r_in, r_in_raw = await rabbit_sides(args.redis_url, c)
    results["rabbitmq_out"] = await compare(r_out, r_out_raw, n, rounds)
    results["rabbitmq_in"] = await compare(r_in, r_in_raw, n, rounds)
    n_out, n_out_raw, n_in, n_in_raw = await nats_sides(args.redis_url, c)
    results["nats_out"] = await compare(n_out, n_out_raw, n, rounds)
    results["nats_in"] = await compare(n_in, n_in_raw, n, rounds)
    results["webhook_concurrency"] = args.webhook_concurrency
    w_bridge, w_raw, runner = await webhook_sides(args.redis_url, args.webhook_concurrency)
    results["webhook"] = await compare(w_bridge, w_raw, n, rounds)
    await runner.cleanup()
    from .channels import channel_rows  # it imports this module's helpers

    results.update(await channel_rows(args.redis_url, args.channel_messages,
                                      args.channel_concurrency, rounds))
    await broker_rows(args, results)
    results["latency"] = await _latency(args)
    for close in CLOSERS:
        await close()
    return results


async def broker_rows(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The Kafka and SQS rows (bench/integrations_brokers.py), brokers started there."""
    from . import integrations_brokers as more

    n, c, rounds = args.messages, args.concurrency, args.rounds
    async with more.brokers() as (servers, endpoint):
        k_out, k_out_raw, k_in, k_in_raw = await more.kafka_sides(
            args.redis_url, servers, c, through_tidings, bounded, _time_consumer)
        results["kafka_out"] = await compare(k_out, k_out_raw, n, rounds)
        results["kafka_in"] = await compare(k_in, k_in_raw, n, rounds)
        s_out, s_out_raw, s_in, s_in_raw, close = await more.sqs_sides(
            args.redis_url, endpoint, c, drop, bounded, _time_consumer)
        results["sqs_out"] = await compare(s_out, s_out_raw, args.sqs_messages, rounds)
        results["sqs_in"] = await compare(s_in, s_in_raw, args.sqs_messages, rounds)
        results["sqs_messages"] = args.sqs_messages
        await close()


async def _latency(args: argparse.Namespace) -> dict[str, Any]:
    from .integrations_latency import latency_rows

    return await latency_rows(args.redis_url, args.latency_messages, args.latency_interval,
                              args.rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.integrations", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    # httpx slows down as concurrent connections grow (both sides alike), so the webhook
    # measurement runs at its own, smaller concurrency.
    parser.add_argument("--webhook-concurrency", type=int, default=8)
    parser.add_argument("--channel-messages", type=int, default=2000)
    parser.add_argument("--channel-concurrency", type=int, default=8)
    parser.add_argument("--sqs-messages", type=int, default=1000,
                        help="messages of the SQS rows (moto slows down with queue length)")
    parser.add_argument("--quick", action="store_true", help="500 messages, one round")
    parser.add_argument("--only-brokers", action="store_true",
                        help="only the Kafka and SQS rows, merged into the results file")
    parser.add_argument("--latency-messages", type=int, default=50,
                        help="timed messages per side and round of the latency rows")
    parser.add_argument("--latency-interval", type=float, default=0.02,
                        help="seconds between two messages of the latency rows")
    parser.add_argument("--only-latency", action="store_true",
                        help="only the latency rows, merged into the results file")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.messages, parsed.rounds, parsed.channel_messages = 500, 1, 300
        parsed.sqs_messages = 200
    if parsed.only_brokers or parsed.only_latency:
        path = RESULTS / "integrations.json"
        out = json.loads(path.read_text()) if path.exists() else {}
        if parsed.only_latency:
            out["latency"] = asyncio.run(_latency(parsed))
        else:
            asyncio.run(broker_rows(parsed, out))
    else:
        out = asyncio.run(main(parsed))
    text = json.dumps(out, indent=2)
    print(text)
    (RESULTS / "integrations.json").write_text(text + "\n")
