"""Producer backpressure from the server's memory: slow down, then refuse, before it is full.

With ``maxmemory-policy noeviction`` (which tidings requires) a server whose used memory
passes ``maxmemory`` refuses writes. A publish refused there is refused whole (its script
declares no ``allow-oom``), so nothing accepted is lost, but every producer learns of it
only at the wall. The gauge lets them feel it coming: from ``memory_slow_at`` of
``maxmemory`` each publish waits a little (longer the fuller the server), from
``memory_refuse_at`` it is refused with :class:`~tidings.errors.QueueFullError` before it is
sent, leaving the last room to the consumers, whose settling frees memory.

Publishers read a cached sample of ``INFO memory``: a publish never waits for a sample;
when the cached one is older than the interval, a fresh one is taken in the background
(often while the server is tight, seldom while it is not).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ResponseError

from ..core.clock import Clock
from ..core.errors import QueueFullError
from ..core.settings import Settings
from .connection import TRANSIENT

log = logging.getLogger("tidings.engine")

RETRY_AFTER_FULL = 1.0  # seconds: the hint a refused producer gets
MAX_SLOWDOWN = 0.05  # seconds a publish waits just below memory_refuse_at
CALM_INTERVAL, TIGHT_INTERVAL = 1.0, 0.1  # seconds between samples


class MemoryGauge:
    """The server's used memory as a share of ``maxmemory`` (0 when it has no maxmemory)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.slow_at = settings.memory_slow_at
        self.refuse_at = settings.memory_refuse_at
        self.clock = clock
        self.share = 0.0
        self.enabled = True  # off when INFO is not ours to run
        self._next_sample = 0.0
        self._sampling: asyncio.Task[None] | None = None

    def update(self, info: dict[str, Any]) -> None:
        """Take a reply of ``INFO memory``."""
        maxmemory = int(info.get("maxmemory", 0) or 0)
        used = int(info.get("used_memory", 0) or 0)
        self.share = used / maxmemory if maxmemory > 0 else 0.0
        tight = self.share >= self.slow_at
        self._next_sample = self.clock.monotonic() + (TIGHT_INTERVAL if tight else CALM_INTERVAL)

    def delay(self, queue: str, client: Any) -> float:
        """Seconds a publish to ``queue`` should wait first; raises QueueFullError when the
        server is at ``memory_refuse_at``. Starts a fresh sample when the last one is old."""
        if self.enabled and self.clock.monotonic() >= self._next_sample:
            self._start_sample(client)
        share = self.share
        if share < self.slow_at:
            return 0.0
        if share >= self.refuse_at:
            raise QueueFullError(queue, "server_memory", RETRY_AFTER_FULL,
                                 detail=f"used memory at {share:.0%} of maxmemory")
        span = self.refuse_at - self.slow_at
        return MAX_SLOWDOWN * (share - self.slow_at) / span if span > 0 else 0.0

    def _start_sample(self, client: Any) -> None:
        if self._sampling is not None and not self._sampling.done():
            return
        self._next_sample = self.clock.monotonic() + TIGHT_INTERVAL  # one sample at a time
        self._sampling = asyncio.ensure_future(self._sample(client))

    async def _sample(self, client: Any) -> None:
        try:
            self.update(await client.info("memory"))
        except ResponseError as exc:  # INFO refused (an ACL without it): the server's own
            self.enabled = False      # refusal at maxmemory still stops publishes whole
            log.warning("cannot read the server's memory (%s); publishes will not slow down "
                        "before the server is full", exc)
        except TRANSIENT:
            pass  # the publish itself meets the outage and reports it

    async def close(self) -> None:
        sampling, self._sampling = self._sampling, None
        if sampling is not None and not sampling.done():
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
