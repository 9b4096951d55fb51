"""The blocking facade for producers that are not async."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tidings import Tidings, ValidationError


def _publish_from_thread(redis_url: str, prefix: str) -> tuple[str, str, int]:
    app = Tidings(redis_url, key_prefix=prefix)
    app.queue("email")
    with app.sync() as client:
        first = client.publish("email", {"to": "a@b.c"}, idempotency_key="k1")
        again = client.publish("email", {"to": "a@b.c"}, idempotency_key="k1")
        client.publish_many("email", [1, 2, 3])
        with pytest.raises(ValidationError):
            client.publish("email", 1, priority="nope")
        depth = client.stats("email").depth
    return first, again, depth


async def test_sync_client_publishes_from_plain_threads(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    first, again, depth = await asyncio.to_thread(_publish_from_thread, redis_url, prefix)
    assert first == again and depth == 4
    app = Tidings(redis_url, key_prefix=prefix)
    async with app:
        keys = [k async for k in app.broker.client.scan_iter(match=f"{prefix}:*")]
        await app.broker.client.delete(*keys)


def _reuse(redis_url: str, prefix: str) -> tuple[bool, int]:
    app = Tidings(redis_url, key_prefix=prefix)
    app.queue("email")
    first = app.sync()
    first.publish("email", 1)
    again = app.sync()  # no close() in between: the same facade, not a second loop
    again.publish("email", 2)
    with app.sync() as client:
        client.publish("email", 3)
    with app.sync() as client:  # after a close, a fresh one
        depth = client.stats("email").depth
    first.close()  # closing twice is harmless
    return first is again, depth


async def test_sync_facade_is_reusable_and_a_context_manager(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    same, depth = await asyncio.to_thread(_reuse, redis_url, prefix)
    assert same and depth == 3
    app = Tidings(redis_url, key_prefix=prefix)
    async with app:
        keys = [k async for k in app.broker.client.scan_iter(match=f"{prefix}:*")]
        await app.broker.client.delete(*keys)
