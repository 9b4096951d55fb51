"""Lifecycle events: what happened to a message, as every middleware's ``on_event`` sees it.

Events are emitted by the producer (published) and the worker (delivered, acked, retried
...) through the middleware chain (:mod:`tidings.core.middleware`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from .message import Message


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
    # A queue rate limit made the fetch wait (tidings.flow): ``delay`` is the wait in seconds.
    RATE_LIMITED = "rate_limited"
    # The in-process alert evaluator (tidings.observability.evaluator): ``reason`` is the
    # alert's name, ``error`` what crossed its threshold; ``message_id`` is empty.
    ALERT_FIRING = "alert_firing"
    ALERT_RESOLVED = "alert_resolved"


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
