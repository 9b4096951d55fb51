"""Structured JSON logging of lifecycle events (one line per event)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from .events import Event, EventKind, Middleware

# Failures are worth a line at INFO; the happy path only at DEBUG, since at thousands of
# messages a second a line per ack is a cost nobody wants by default.
_LEVELS = {
    EventKind.RETRIED: logging.WARNING,
    EventKind.DEAD_LETTERED: logging.ERROR,
    EventKind.EXPIRED: logging.WARNING,
    EventKind.LEASE_LOST: logging.WARNING,
    EventKind.RELEASED: logging.INFO,
    EventKind.BREAKER_OPENED: logging.WARNING,
    EventKind.BREAKER_HALF_OPEN: logging.INFO,
    EventKind.BREAKER_CLOSED: logging.INFO,
}


def configure_logging(level: str = "INFO", json: bool = True, stream: TextIO | None = None) -> None:
    """Route tidings' own logs and the event lines through structlog, as JSON or console."""
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=stream or sys.stderr,
                        format='{"level": "%(levelname)s", "logger": "%(name)s", '
                               '"event": "%(message)s"}' if json else "%(levelname)s %(message)s")


class JsonLogMiddleware(Middleware):
    """Logs every lifecycle event with message id, queue and correlation id."""

    def __init__(self, logger: Any = None) -> None:
        self.log = logger or structlog.get_logger("tidings")

    def on_event(self, event: Event) -> None:
        fields: dict[str, Any] = {
            "message_id": event.message_id, "queue": event.queue,
            "correlation_id": event.correlation_id, "priority": event.priority,
            "attempt": event.attempt,
        }
        for name in ("duration", "delay", "reason", "error"):
            value = getattr(event, name)
            if value is not None:
                fields[name] = value
        self.log.log(_LEVELS.get(event.kind, logging.DEBUG), event.kind.value, **fields)
