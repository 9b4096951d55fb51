"""What the drain benchmarks share: a handler that counts to ``n``, and cleaning up."""

from __future__ import annotations

import asyncio

from tidings import Message, Queue, Tidings


def count_to(queue: Queue, n: int, concurrency: int) -> asyncio.Event:
    """Register a no-op handler on ``queue``; the event is set at its ``n``-th message."""
    done = asyncio.Event()
    count = 0

    @queue.handler(concurrency=concurrency)
    async def handle(msg: Message) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    return done


async def drop_keys(app: Tidings) -> None:
    """Unlink every key under the app's prefix."""
    client = app.broker.client
    keys = [k async for k in client.scan_iter(match=f"{app.settings.key_prefix}:*",
                                              count=1000)]
    for i in range(0, len(keys), 500):
        await client.unlink(*keys[i:i + 500])
