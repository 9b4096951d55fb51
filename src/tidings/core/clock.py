"""The one clock: every Python-side reading of time goes through the app's clock.

``Tidings(clock=...)`` hands it to the queues, the worker, flow control, schedules and
campaigns. The Lua scripts keep the server's clock (leases, due times, expiry), so the
fleet agrees on time whatever the hosts' clocks say; the Python clock stamps what the
process measures itself: message ids and creation times, handler durations, deadlines,
waits between retries of a loop, schedule and campaign instants.

:class:`ManualClock` lets a test move time instead of sleeping: its ``sleep`` returns as
soon as :meth:`ManualClock.advance` moves the clock past the sleeper's deadline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What tidings asks of a clock."""

    def time(self) -> float:
        """Wall time, Unix seconds."""

    def monotonic(self) -> float:
        """Seconds for durations and deadlines (never goes back)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    """The real clock (the default)."""

    __slots__ = ()

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def now_ms(clock: Clock) -> int:
    """The clock's wall time in whole Unix milliseconds."""
    return int(clock.time() * 1000)


def utc_now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.time(), UTC)


class ManualClock:
    """A clock that moves only when told to; sleepers wake when it passes their time."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._start = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), wake))
        await wake

    def advance(self, seconds: float) -> None:
        """Move the clock forward; wakes every sleeper whose time has come."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, wake = heapq.heappop(self._sleepers)
            if not wake.done():
                wake.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (a test can wait for a loop to go to sleep)."""
        return sum(1 for _, _, wake in self._sleepers if not wake.done())
