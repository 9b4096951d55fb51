"""One INFO line per worker every few seconds: what it processed, what failed, what runs.

The event lines of the happy path are at DEBUG (a line per ack costs too much at
thousands of messages a second), so without this a healthy worker says nothing at INFO.
``tidings worker`` installs it; any app can::

    install_activity_log(app, every=5.0)

It is a middleware that counts events plus a worker service that logs the counts since
the previous line, then starts over. Idle spells log nothing (no messages handled, none
in flight).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from ..core.events import Event, EventKind, Middleware

if TYPE_CHECKING:
    from ..app import Tidings
    from ..worker import Worker

_FAILED = (EventKind.RETRIED, EventKind.DEAD_LETTERED, EventKind.EXPIRED)


class ActivityCounter(Middleware):
    """Counts settled messages: processed (acked) and failed (retried, dead, expired)."""

    def __init__(self) -> None:
        self.processed = 0
        self.failed = 0

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.ACKED:
            self.processed += 1
        elif event.kind in _FAILED:
            self.failed += 1

    def take(self) -> tuple[int, int]:
        """The counts since the previous call."""
        counts = (self.processed, self.failed)
        self.processed = self.failed = 0
        return counts


class ActivityLog:
    """The worker service that logs an :class:`ActivityCounter` every ``every`` seconds."""

    def __init__(self, counter: ActivityCounter, every: float = 5.0,
                 logger: Any = None) -> None:
        self.counter = counter
        self.every = every
        self.log = logger or structlog.get_logger("tidings")

    async def __call__(self, worker: Worker) -> None:
        # A service lives as long as its worker: return only once it stopped.
        self.counter.take()
        while not worker.stopped.is_set():
            stopped = asyncio.ensure_future(worker.stopped.wait())
            try:
                await asyncio.wait([stopped], timeout=self.every)
            finally:
                stopped.cancel()
            self.emit(worker)

    def emit(self, worker: Worker) -> None:
        processed, failed = self.counter.take()
        if processed or failed or worker.running:
            self.log.info("activity", worker=worker.consumer, processed=processed,
                          failed=failed, in_flight=worker.running, seconds=self.every)


def install_activity_log(app: Tidings, every: float = 5.0) -> ActivityLog:
    """Log one INFO activity line per worker of ``app`` every ``every`` seconds."""
    counter = ActivityCounter()
    app.add_middleware(counter)
    service = ActivityLog(counter, every)
    app.add_worker_service(service)
    return service
