"""Lifecycle events and the middleware interface they flow through.

Metrics, tracing, logging, the ledger and audit plug in here instead of being threaded
through the worker. A middleware overrides what it needs::

    class CountFailures(Middleware):
        def on_event(self, event: Event) -> None:
            if event.kind is EventKind.DEAD_LETTERED:
                failures[event.queue] += 1

    app = Tidings(middleware=[CountFailures()])

``on_event`` is called inline on the worker's event loop: keep it cheap and non-blocking
(hand slow work to a queue or thread of your own). An exception raised by a middleware is
logged and swallowed; it never changes what happens to a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .message import Message

log = logging.getLogger("tidings.core.events")


class EventKind(StrEnum):
    PUBLISHED = "published"
    DELIVERED = "delivered"
    ACKED = "acked"
    RETRIED = "retried"
    SNOOZED = "snoozed"
    RELEASED = "released"  # handed back unfinished at shutdown, no attempt spent
    DEAD_LETTERED = "dead_lettered"
    EXPIRED = "expired"
    LEASE_LOST = "lease_lost"
    # Circuit breaker state changes (tidings.flow): reported once, by the worker whose call
    # made the change; ``reason`` reads "breaker NAME: FROM -> TO".
    BREAKER_OPENED = "breaker_opened"
    BREAKER_HALF_OPEN = "breaker_half_open"
    BREAKER_CLOSED = "breaker_closed"


@dataclass(slots=True)
class Event:
    """One thing that happened to one message."""

    kind: EventKind
    queue: str
    message_id: str
    priority: str = "normal"
    attempt: int = 0
    correlation_id: str | None = None
    duration: float | None = None  # handler seconds, for acked / retried / dead_lettered
    delay: float | None = None  # seconds until the next attempt, for retried / snoozed
    reason: str | None = None
    error: str | None = None
    timestamp: float = field(default_factory=time.time)
    message: Message | None = None


Handler = Callable[[Any], Awaitable[Any]]


class Middleware:
    """Base class: override ``on_event`` and/or ``around_handler``."""

    def on_event(self, event: Event) -> None:
        """Called for every lifecycle event."""

    async def around_handler(
        self, message: Message | list[Message], call_next: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Wrap a handler call (tracing spans, context variables). Must await call_next()."""
        return await call_next()


class EventBus:
    """Fans events out to the middleware; the worker and the producer emit through it."""

    __slots__ = ("_around", "_listeners", "middleware")

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self.middleware: list[Middleware] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._around: list[Middleware] = []
        for item in middleware:
            self.add(item)

    def add(self, item: Middleware) -> None:
        self.middleware.append(item)
        if type(item).on_event is not Middleware.on_event:
            self._listeners.append(item.on_event)
        if type(item).around_handler is not Middleware.around_handler:
            self._around.append(item)

    @property
    def wraps_handlers(self) -> bool:
        return bool(self._around)

    @property
    def active(self) -> bool:
        """False when nobody listens, so hot paths can skip building events."""
        return bool(self._listeners)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("middleware %r failed on %s", listener, event.kind)

    def message_event(self, kind: EventKind, message: Message, **extra: Any) -> None:
        if self._listeners:
            self.emit(
                Event(kind, message.queue, message.id, message.priority.label, message.attempts,
                      message.headers.get("correlation_id"), message=message, **extra)
            )

    def emit_published(
        self, queue: str, message_id: str, priority: Any, headers: dict[str, str] | None
    ) -> None:
        self.emit(Event(EventKind.PUBLISHED, queue, message_id, priority.label, 0,
                        (headers or {}).get("correlation_id")))

    async def call_handler(
        self, message: Message | list[Message], call: Callable[[], Awaitable[Any]]
    ) -> Any:
        if not self._around:
            return await call()
        chain = call
        for item in reversed(self._around):
            chain = _wrap(item, message, chain)
        return await chain()


def _wrap(
    item: Middleware, message: Message | list[Message], call_next: Callable[[], Awaitable[Any]]
) -> Callable[[], Awaitable[Any]]:
    async def wrapped() -> Any:
        return await item.around_handler(message, call_next)

    return wrapped
