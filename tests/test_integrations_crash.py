"""Nothing lost, nothing doubled, when a bridge consumer process is killed with SIGKILL
mid-stream: what it stored but did not ack comes again and is dropped by its key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable

import aio_pika
import nats

from fault_helpers import ROOT, poll
from tidings import Tidings

AMQP = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")
COUNT = 3000


def start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.apps.bridge_proc", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def kill_midway_then_finish(app: Tidings, args: list[str],
                                  remaining: Callable[[], object]) -> None:
    target = app.queue("bridged")
    await app.connect()

    async def depth() -> int:
        return (await target.stats()).depth

    first = start(*args)
    try:
        await poll(lambda: _at_least(depth, COUNT // 10), 60, "the first bridge to start")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert await depth() < COUNT  # killed mid-stream
    second = start(*args)
    try:
        await poll(lambda: _at_least(depth, COUNT), 120, "every message in tidings",
                   lambda: _stderr(second))
        await poll(remaining, 60, "the source to be fully acked")
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
    assert await depth() == COUNT  # each message once: redeliveries were dropped by key


def _stderr(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        return " (the bridge is still running)"
    return f" (the bridge exited {process.returncode}: {process.stderr.read()[-2000:]!r})" \
        if process.stderr else ""


async def _at_least(read: Callable[[], object], count: int) -> bool:
    return await read() >= count  # type: ignore[misc, operator, no-any-return]


async def test_rabbitmq_bridge_killed_mid_stream_loses_and_doubles_nothing(
        make_app: Callable[..., Tidings], redis_url: str) -> None:
    app = make_app()
    name = f"tidings-crash-{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect(AMQP)
    channel = await connection.channel()
    try:
        await channel.declare_queue(name)
        for i in range(COUNT):
            await channel.default_exchange.publish(
                aio_pika.Message(f'{{"n":{i}}}'.encode(), content_type="application/json",
                                 message_id=f"m-{i}"), routing_key=name)

        async def drained() -> bool:
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result.message_count == 0

        await kill_midway_then_finish(
            app, ["rabbitmq", redis_url, app.settings.key_prefix, AMQP, name], drained)
    finally:
        await channel.queue_delete(name)
        await connection.close()


async def test_nats_bridge_killed_mid_stream_loses_and_doubles_nothing(
        make_app: Callable[..., Tidings], redis_url: str) -> None:
    app = make_app()
    token = uuid.uuid4().hex[:12]
    stream, subject = f"tidings_crash_{token}", f"tidings.crash.{token}"
    client = await nats.connect(NATS)
    js = client.jetstream()
    try:
        await js.add_stream(name=stream, subjects=[subject])
        for i in range(COUNT):
            await js.publish(subject, f'{{"n":{i}}}'.encode(),
                             headers={"Content-Type": "application/json"})

        async def drained() -> bool:
            info = await js.consumer_info(stream, "crash")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await kill_midway_then_finish(
            app, ["nats", redis_url, app.settings.key_prefix, NATS, stream, subject], drained)
    finally:
        await js.delete_stream(stream)
        await client.close()
