"""Publishing against a real server: lanes, idempotency, delays, TTL, limits, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Recorder
from tidings import (
    BrokerUnavailableError,
    DurabilityError,
    EventKind,
    Message,
    MessageNotFoundError,
    Outgoing,
    PayloadError,
    QueueFullError,
    ServerConfigError,
    Tidings,
    UnknownQueueError,
    ValidationError,
)


async def test_publish_puts_each_message_in_its_priority_lane(app: Tidings) -> None:
    q = app.queue("email")
    await q.publish({"n": 1}, priority="high")
    await q.publish({"n": 2})
    await q.publish_many([Outgoing({"n": 3}, "low"), Outgoing({"n": 4}, "low")])
    stats = await q.stats()
    assert stats.lanes == {"high": 1, "normal": 1, "low": 2}
    assert stats.counters["published"] == 4


async def test_duplicate_idempotency_key_enqueues_nothing_and_returns_first_id(
        app: Tidings) -> None:
    q = app.queue("email")
    first = await q.publish({"v": 1}, idempotency_key="order-42:welcome")
    second = await q.publish({"v": 2}, idempotency_key="order-42:welcome")
    batch = await q.publish_many([Outgoing({"v": 3}, idempotency_key="order-42:welcome"),
                                  Outgoing({"v": 4}, idempotency_key="other")])
    assert second == first and batch[0] == first and batch[1] != first
    assert (await q.stats()).depth == 2
    info = await q.inspect(first)
    assert info is not None and info.message is not None and info.message.payload == {"v": 1}


async def test_idempotency_key_expires_after_the_dedupe_window(app: Tidings) -> None:
    q = app.queue("email", dedupe_window=1.0)
    first = await q.publish(1, idempotency_key="k")
    assert await q.publish(2, idempotency_key="k") == first  # within the window: nothing new
    # Wait the window out on the server's clock: republish until the key has expired.
    second = first
    async with asyncio.timeout(10):
        while second == first:
            await asyncio.sleep(0.05)
            second = await q.publish(3, idempotency_key="k")
    stats = await q.stats()
    assert stats.depth == 2 and stats.counters["published"] == 2  # the first and the new one
    info = await q.inspect(second)
    assert info is not None and info.message is not None and info.message.payload == 3


async def test_batch_publish_returns_ids_in_order_across_chunks(app: Tidings) -> None:
    q = app.queue("bulk")
    ids = await q.publish_many([{"i": i} for i in range(2500)], chunk_size=1000)
    assert len(ids) == len(set(ids)) == 2500
    assert ids == sorted(ids)  # ULIDs sort by creation
    info = await q.inspect(ids[1234])
    assert info is not None and info.message is not None and info.message.payload == {"i": 1234}


def _items_then_bad(good: int) -> Iterator[Any]:
    yield from ({"i": i} for i in range(good))
    yield Outgoing({"i": good}, priority="urgent")  # not a priority: a ValidationError


async def test_a_bad_item_in_a_later_chunk_leaves_the_earlier_chunks_published(
        app: Tidings) -> None:
    q = app.queue("bulk")
    with pytest.raises(ValidationError, match="priority"):
        await q.publish_many(_items_then_bad(2500), chunk_size=1000)
    # chunks 1 and 2 were published (chunk 2 was on the wire while chunk 3 was encoded);
    # nothing of chunk 3, the one holding the bad item
    assert (await q.stats()).depth == 2000


async def test_a_refused_chunk_stops_the_later_chunks(app: Tidings) -> None:
    q = app.queue("bulk", max_depth=1500)
    with pytest.raises(QueueFullError):
        await q.publish_many([{"i": i} for i in range(5000)], chunk_size=1000)
    # chunk 2 was refused whole; chunks 3 to 5 were encoded in turn but never sent
    assert (await q.stats()).depth == 1000


async def test_delayed_message_waits_in_the_delayed_set_and_can_be_cancelled(
        app: Tidings) -> None:
    q = app.queue("email")
    msg_id = await q.publish("later", delay=timedelta(hours=1))
    info = await q.inspect(msg_id)
    assert info is not None and info.state == "delayed" and info.due_at is not None
    assert info.due_at > datetime.now(UTC) + timedelta(minutes=59)
    assert (await q.stats()).delayed == 1
    assert await q.cancel(msg_id) is True
    assert await q.cancel(msg_id) is False
    assert await q.inspect(msg_id) is None
    assert (await q.stats()).delayed == 0


async def test_reschedule_moves_the_due_time(app: Tidings) -> None:
    q = app.queue("email")
    send_at = datetime.now(UTC) + timedelta(days=1)
    msg_id = await q.publish("later", send_at=send_at)
    due = await q.reschedule(msg_id, delay=timedelta(hours=2))
    assert timedelta(hours=1, minutes=59) < due - datetime.now(UTC) < timedelta(hours=2, minutes=1)
    with pytest.raises(MessageNotFoundError):
        await q.reschedule("nope", delay=1)


async def test_send_at_in_the_past_is_delivered_now(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    received: list[tuple[str, object]] = []

    @q.handler
    async def handle(msg: Message) -> None:
        received.append((msg.id, msg.payload))

    msg_id = await q.publish("now", send_at=datetime.now(UTC) - timedelta(minutes=1))
    info = await q.inspect(msg_id)
    assert info is not None and info.state == "queued"  # in its lane, not the delayed set
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    assert received == [(msg_id, "now")]


@pytest.mark.parametrize(("options", "field"), [
    ({"send_at": datetime(2026, 12, 1, 9, 0)}, "send_at"),
    ({"expires_at": datetime(2026, 12, 1, 9, 0)}, "expires_at"),
    ({"delay": -1}, "delay"),
    ({"priority": "urgent"}, "priority"),
    ({"headers": {"a": 1}}, "headers"),
    ({"delay": 1, "send_at": datetime.now(UTC)}, "delay"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"max_attempts": 0}, "max_attempts"),
])
async def test_bad_publish_options_raise_a_typed_error_naming_the_field(
        app: Tidings, options: dict[str, object], field: str) -> None:
    q = app.queue("email")
    with pytest.raises(ValidationError) as info:
        await q.publish({"x": 1}, **options)  # type: ignore[arg-type]
    assert info.value.field == field
    assert (await q.stats()).depth == 0


async def test_payload_over_the_queue_limit_is_rejected(app: Tidings) -> None:
    q = app.queue("email", max_payload_bytes=1024)
    with pytest.raises(PayloadError, match="allows 1024") as info:
        await q.publish({"body": "x" * 2000})
    assert info.value.field == "payload"
    await q.publish({"body": "x" * 500})


async def test_default_payload_limit_is_256_kib(app: Tidings) -> None:
    q = app.queue("email")
    with pytest.raises(PayloadError):
        await q.publish(b"x" * (256 * 1024 + 1))


async def test_non_serializable_payload_is_rejected(app: Tidings) -> None:
    with pytest.raises(PayloadError):
        await app.queue("email").publish({"obj": object()})


def test_unknown_queue_is_a_typed_error(app: Tidings) -> None:
    with pytest.raises(UnknownQueueError) as info:
        app.get_queue("nope")
    assert info.value.field == "queue"


async def test_unreachable_server_raises_after_bounded_retries() -> None:
    app = Tidings("redis://127.0.0.1:1/0", connect_retries=2, connect_backoff=0.01)
    with pytest.raises(BrokerUnavailableError, match="3 attempts"):
        await app.queue("email").publish("x")


async def test_replicated_durability_without_replicas_raises(
        make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    q = app.queue("otp", durability="replicated", durability_timeout=0.05)
    with pytest.raises(DurabilityError) as info:
        await q.publish("123456", idempotency_key="otp-1")
    # The write happened; the id is reported so the caller can check or republish safely.
    assert len(info.value.message_ids) == 1
    with pytest.raises(DurabilityError) as again:
        await q.publish("123456", idempotency_key="otp-1")
    assert again.value.message_ids == info.value.message_ids  # deduplicated, not re-added
    assert (await q.stats()).depth == 1


async def test_disk_durability_is_confirmed_or_refused_at_start(
        make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    q = app.queue("receipts", durability="disk")
    probe = make_app()
    await probe.connect()
    info = await probe.broker.client.info("persistence")
    if int(info["aof_enabled"]):
        await q.publish("kept")  # WAITAOF (or appendfsync always) confirmed the fsync
        assert (await q.stats()).depth == 1
    else:
        with pytest.raises(ServerConfigError, match="appendonly"):
            await app.connect()


async def test_eviction_policy_other_than_noeviction_is_refused(
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    await probe.connect()
    client = probe.broker.client
    old = (await client.config_get("maxmemory-policy"))["maxmemory-policy"]
    await client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ServerConfigError, match="noeviction"):
            await make_app().connect()
    finally:
        await client.config_set("maxmemory-policy", old)
