"""Tenant fairness: a flooding tenant does not delay a quiet one."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Recorder
from flow_helpers import wait_until
from tidings import DurabilityError, EventKind, Message, Tidings
from tidings.flow import FairMessage


async def test_quiet_tenant_is_not_stuck_behind_a_flood(app: Tidings) -> None:
    q = app.queue("email")
    fair = app.flow.fair(q)
    order: list[str] = []

    @q.handler(concurrency=4)
    async def handle(msg: Message) -> None:
        order.append(msg.payload)
        await asyncio.sleep(0.001)

    await fair.publish_many([FairMessage("flood", "big") for _ in range(2000)])
    async with app.worker():
        await wait_until(lambda: len(order) >= 50)
        assert await fair.held() > 1000  # the flood waits in its line, not in the lane
        assert (await q.stats()).depth <= 8  # lanes only topped up to what is fetched
        at = len(order)
        await fair.publish("quiet-1", tenant="small")
        await wait_until(lambda: "quiet-1" in order)
        assert order.index("quiet-1") - at <= 8  # one turn of the flood, not 1,950
        await wait_until(lambda: len(order) == 2001, timeout=30)
    assert await fair.held() == 0


async def test_round_robin_between_busy_tenants(app: Tidings) -> None:
    q = app.queue("email")
    fair = app.flow.fair(q, quantum=2)
    order: list[str] = []

    @q.handler(concurrency=1)
    async def handle(msg: Message) -> None:
        order.append(msg.payload)

    await fair.publish_many([FairMessage("a", "a") for _ in range(10)]
                            + [FairMessage("b", "b") for _ in range(4)]
                            + [FairMessage("c", "c") for _ in range(2)])
    async with app.worker():
        await wait_until(lambda: len(order) == 16)
    assert order[:10].count("a") <= 4 and set(order[:6]) == {"a", "b", "c"}


async def test_lanes_and_other_gates_still_apply(app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    fair = app.flow.fair(q)
    app.flow.rate_limit("email", "50/s", burst=5).protect(q)
    seen: list[str] = []

    @q.handler(concurrency=1)
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)

    await fair.publish_many([FairMessage(f"low-{i}", "t", "low") for i in range(5)])
    await fair.publish("urgent", tenant="t", priority="high")
    await fair.publish("gone", tenant="t", expires_in=0.001)
    await asyncio.sleep(0.01)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 6)
        await recorder.wait_count(EventKind.EXPIRED, 1)
    assert seen[0] == "urgent" and len(seen) == 6


async def test_fair_publish_has_the_queue_durability_and_events(
        app: Tidings, recorder: Recorder) -> None:
    otp = app.queue("otp", durability="replicated", durability_timeout=0.05)
    fair = app.flow.fair(otp)
    with pytest.raises(DurabilityError) as info:  # no replica confirms the write
        await fair.publish("123456", tenant="acme")
    assert len(info.value.message_ids) == 1 and await fair.held() == 1
    email = app.queue("email")
    ids = await app.flow.fair(email).publish_many([FairMessage(i, "acme") for i in range(3)])
    assert [e.message_id for e in recorder.of(EventKind.PUBLISHED)] == ids
