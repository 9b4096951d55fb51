"""What every bridge consumer counts (moved, rejected, requeued) and a way to await counts."""

from __future__ import annotations

import asyncio


class Counted:
    """Counters of settled messages, and :meth:`wait_until` (tests and the CLI use it)."""

    def __init__(self) -> None:
        self.moved = 0  # acked/committed/deleted after tidings stored them (duplicates too)
        self.rejected = 0  # could never be stored: dropped at the source, reason logged
        self.requeued = 0  # handed back to the source for another try
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to end after the batch in hand (which it settles first)."""
        self._stopped.set()

    async def wait_until(self, *, moved: int = 0, rejected: int = 0, requeued: int = 0,
                         timeout: float = 30.0) -> None:
        """Wait until at least the given counts of messages were settled each way."""
        async def loop() -> None:
            while (self.moved < moved or self.rejected < rejected
                   or self.requeued < requeued):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def _count(self, attr: str, count: int = 1) -> None:
        setattr(self, attr, getattr(self, attr) + count)
        self._changed.set()
