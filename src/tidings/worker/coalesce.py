"""Coalescing settles: one round trip per batch under load, no added delay when idle.

Whatever arrives while the previous flush is on the wire goes out in the next one, so a
busy worker acks thousands of messages per round trip while a lone message is acked at
once. Used by the plain queues' acks and the ordered queues' acks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Collects items and hands them to ``flush`` in batches of at most ``max_batch``."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], max_batch: int) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._items: list[T] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        self._items.append(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def __len__(self) -> int:
        return len(self._items)

    async def flushed(self) -> None:
        """Wait until everything added so far has been flushed."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._items:
                batch = self._items[:self._max_batch]
                del self._items[:len(batch)]
                await self._flush(batch)
        finally:
            self._task = None
