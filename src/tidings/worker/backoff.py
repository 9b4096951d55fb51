"""Pacing of a worker loop that the server refused or did not answer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.clock import Clock

log = logging.getLogger("tidings.worker")


class Backoff:
    """Reconnect pacing: exponential with a cap, reset on success."""

    def __init__(self, clock: Clock, base: float = 0.05, cap: float = 5.0) -> None:
        self.clock = clock
        self.base, self.cap, self.failures = base, cap, 0

    async def wait(self, what: str, exc: BaseException) -> None:
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__, exc, delay)
        await self.clock.sleep(delay)

    def reset(self) -> None:
        self.failures = 0


def consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()
