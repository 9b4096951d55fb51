"""The one reconnect loop every bridge consumer runs in (integrations/reconnect.py), with an
injected clock: a connection error is logged once, backed off (bounded, jittered) and
retried; a configuration error ends the bridge; stop() ends the wait."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tidings import ConfigError
from tidings.core.clock import ManualClock
from tidings.integrations.reconnect import BACKOFF, Attempts, keep_running


class Clock(ManualClock):
    """A manual clock that says when the loop went to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asleep.set()
        await super().sleep(seconds)


async def asleep(clock: Clock) -> None:
    await asyncio.wait_for(clock.asleep.wait(), 5)
    clock.asleep.clear()


async def test_a_lost_connection_is_logged_backed_off_and_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    clock, stopped, calls = Clock(), asyncio.Event(), []

    async def session(attempts: Attempts) -> None:
        calls.append(attempts.count)
        if len(calls) <= 3:
            raise OSError("connection refused")

    with caplog.at_level(logging.WARNING, "tidings.integrations"):
        task = asyncio.create_task(keep_running("x-in", session, stopped, clock=clock))
        for _ in range(3):
            await asleep(clock)
            clock.advance(BACKOFF.cap)  # the longest a pause can be
        await task
    assert calls == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == "tidings.integrations"]
    assert len(lines) == 3 and all("x-in: connection lost (OSError" in ln for ln in lines)
    assert [BACKOFF.delay(n) <= BACKOFF.cap for n in range(1, 50)] == [True] * 49


async def test_a_config_error_ends_the_bridge() -> None:
    async def session(attempts: Attempts) -> None:
        raise ConfigError("stream", "no such stream")

    with pytest.raises(ConfigError):
        await keep_running("x-in", session, asyncio.Event(), clock=ManualClock())


async def test_stop_ends_the_wait_between_attempts() -> None:
    clock, stopped = Clock(), asyncio.Event()

    async def session(attempts: Attempts) -> None:
        raise OSError("down")

    task = asyncio.create_task(keep_running("x-in", session, stopped, clock=clock))
    await asleep(clock)
    stopped.set()
    await asyncio.wait_for(task, 5)
