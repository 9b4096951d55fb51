"""Structured JSON logging of lifecycle events (one line per event)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace

from ..core.errors import ConfigError
from ..core.events import Event, EventKind
from ..core.message import Message
from ..core.middleware import Call, Middleware
from ..core.settings import check_log_level

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
    EventKind.ALERT_FIRING: logging.WARNING,
    EventKind.ALERT_RESOLVED: logging.INFO,
}


def _safe_text(value: object) -> str:
    """``value`` as text that any UTF-8 encoder takes (lone surrogates escaped)."""
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# Characters that JSON allows raw inside strings but that some line readers split on.
_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _dumps(event: dict[str, Any], **_: Any) -> str:
    """One JSON object per line, whatever the fields hold.

    orjson escapes quotes, backslashes and control characters; the Unicode line breaks it
    leaves raw are escaped too. What it refuses (integers beyond 64 bits, lone surrogates,
    keys of odd types) is logged as its ``repr``, so a log call never fails and no line is
    ever half JSON.
    """
    try:
        line = orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        line = orjson.dumps({_safe_text(k): v if v is None or isinstance(v, bool | float)
                             else _safe_text(v) for k, v in event.items()})
    return line.decode().translate(_LINE_BREAKS)


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """ProcessorFormatter that still writes one JSON line when a record cannot be formatted
    (stdlib ``log.info("%s %s", one_arg)``), instead of the logging module's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return super().format(record)
        except Exception as exc:
            return _dumps({"level": record.levelname.lower(), "logger": record.name,
                           "event": _safe_text(record.msg), "args": _safe_text(record.args),
                           "log_error": f"{type(exc).__name__}: {exc}"})


def add_trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current span's trace and span ids, when tracing is on."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


_handler: logging.Handler | None = None  # the handler configure_logging installed last


def log_level_number(level: str | int) -> int:
    """The numeric level of a name (DEBUG, INFO ...); ConfigError naming the valid ones."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    try:
        return int(logging.getLevelNamesMapping()[check_log_level(level)])
    except ValueError as exc:
        raise ConfigError("TIDINGS_LOG_LEVEL", str(exc)) from None


def configure_logging(level: str | int = "INFO", json: bool = True,
                      stream: TextIO | None = None) -> logging.Handler:
    """Route stdlib logging and the structlog event lines through one renderer.

    With ``json`` every line, from ``logging`` or structlog alike, is one JSON object built
    by one encoder (exceptions go in an ``exception`` field); otherwise plain console lines.
    Calling it again replaces the handler it installed before. Returns that handler.
    """
    global _handler
    numeric = log_level_number(level)
    shared: list[Any] = [structlog.contextvars.merge_contextvars, add_trace_ids,
                         structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                         structlog.processors.TimeStamper(fmt="iso", utc=True)]
    renderer: Any = (structlog.processors.JSONRenderer(serializer=_dumps) if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    return handler


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


class LogContext(Middleware):
    """Binds message id, queue and correlation id (structlog context variables) around
    each handler call, so every line logged inside an async handler carries them (with
    :func:`configure_logging`, stdlib lines too); a batch call binds the queue and size."""

    async def around_handler(self, message: Message | list[Message], call_next: Call) -> Any:
        if isinstance(message, list):
            bound: dict[str, Any] = {"queue": message[0].queue, "batch_size": len(message)}
        else:
            bound = {"message_id": message.id, "queue": message.queue,
                     "correlation_id": message.headers.get("correlation_id")}
        with structlog.contextvars.bound_contextvars(**bound):
            return await call_next()
