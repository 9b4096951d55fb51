"""One way every bridge consumer outlives its broker going away: :func:`keep_running`.

A session (connect, subscribe, consume) that fails with a connection error is logged in
one line, followed by a pause from :data:`BACKOFF` (bounded exponential with jitter, the
same :class:`~tidings.core.config.RetryPolicy` tidings retries messages with), and run
again. What the session held unacked goes back to the broker by itself (NATS ack wait,
Kafka uncommitted offsets, SQS visibility timeout) and is redelivered; its idempotency key
drops the copy tidings already stored. A bad configuration is not an outage: a
:class:`~tidings.core.errors.TidingsError` ends the bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.config import RetryPolicy
from ..core.errors import TidingsError

log = logging.getLogger("tidings.integrations")

# 0.2 s, 0.4 s, ... capped at 10 s: a broker back after a restart is used within seconds.
BACKOFF = RetryPolicy(max_attempts=1000, base=0.2, factor=2.0, cap=10.0, jitter=0.5)


class Attempts:
    """The failures in a row of one bridge; :meth:`reset` after a session made progress."""

    def __init__(self) -> None:
        self.count = 0

    def reset(self) -> None:
        self.count = 0


async def keep_running(what: str, session: Callable[[Attempts], Awaitable[None]],
                       stopped: asyncio.Event, *, policy: RetryPolicy = BACKOFF,
                       clock: Clock = SYSTEM_CLOCK) -> None:
    """Run ``session(attempts)`` until it returns or ``stopped`` is set, again after each
    connection error. ``session`` calls ``attempts.reset()`` once it is connected."""
    attempts = Attempts()
    while not stopped.is_set():
        try:
            await session(attempts)
            return
        except TidingsError:
            raise
        except Exception as exc:  # the broker is away: wait, reconnect, carry on
            attempts.count += 1
            delay = policy.delay(min(attempts.count, policy.max_attempts))
            log.warning("%s: connection lost (%s: %s); reconnecting in %.1fs (attempt %d)",
                        what, type(exc).__name__, exc, delay, attempts.count)
        pause = asyncio.ensure_future(clock.sleep(delay))
        woken = asyncio.ensure_future(stopped.wait())
        await asyncio.wait([pause, woken], return_when=asyncio.FIRST_COMPLETED)
        pause.cancel()
        woken.cancel()
