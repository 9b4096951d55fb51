"""OpenTelemetry tracing by the messaging semantic conventions, as a middleware.

- Publish: a ``send <queue>`` span around each publish round trip (PRODUCER for one
  message; for a batch a CLIENT span with one PRODUCER ``create <queue>`` span per
  message, each linked from it). The creation context travels in the envelope's W3C
  ``traceparent`` header, which a retry keeps: every attempt and the dead letter land
  in the trace of the publish.
- Handling: a CONSUMER ``process <queue>`` span around each handler call, child of (and
  linked to) the creation context; a batch call links every message's context. Failures
  set ``error.type``.
- Settling: a CLIENT span per settle (``ack``, ``retry``, ``snooze``, ``dead_letter``,
  ``release``) from the handler's return to the server's answer, child of the process
  span (or of the creation context when no handler ran: a poison or expired message).

Only opentelemetry-api is needed: without an SDK every span is a no-op. Install
``tidings[otel]`` for the SDK and the OTLP exporter (:func:`configure_otlp`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..core.events import Event, EventKind
from ..core.keys import GROUP
from ..core.message import Message
from ..core.middleware import Call, Middleware

SYSTEM = "redis"
_SETTLES = {EventKind.ACKED: "ack", EventKind.RETRIED: "retry", EventKind.SNOOZED: "snooze",
            EventKind.DEAD_LETTERED: "dead_letter", EventKind.RELEASED: "release",
            EventKind.EXPIRED: "expire"}
_NOT_ERRORS = ("Snooze",)  # a snooze is a verdict on timing, not a failure
MAX_PENDING = 100_000  # settle starts remembered; beyond, the oldest are forgotten
_BATCH: ContextVar[Span | None] = ContextVar("tidings_publish_batch", default=None)
_PROPAGATOR = TraceContextTextMapPropagator()


def creation_context(message: Message) -> Context | None:
    """The context a message's ``traceparent`` header carries (None: none, or invalid)."""
    if "traceparent" not in message.headers:
        return None
    context = _PROPAGATOR.extract(message.headers)
    span = trace.get_current_span(context).get_span_context()
    return context if span.is_valid else None


class Tracing(Middleware):
    """Spans for publish, handling and settling (see the module docstring)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("tidings", tracer_provider=tracer_provider)
        # (message id, delivery) -> (process span's context, when its handler returned)
        self.pending: dict[tuple[str, int], tuple[Context, int]] = {}

    # -- producer ----------------------------------------------------------------------

    async def around_publish(self, queue: str, count: int, call_next: Call) -> Any:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM, "messaging.destination.name": queue,
            "messaging.operation.type": "send", "messaging.operation.name": "send"}
        if count > 1:
            attributes["messaging.batch.message_count"] = count
        kind = SpanKind.PRODUCER if count == 1 else SpanKind.CLIENT
        with self.tracer.start_as_current_span(f"send {queue}", kind=kind,
                                               attributes=attributes) as span:
            token = _BATCH.set(span if count > 1 else None)
            try:
                return await call_next()
            finally:
                _BATCH.reset(token)

    def before_publish(self, queue: str, message: Message) -> None:
        batch = _BATCH.get()
        current = trace.get_current_span()
        if batch is None and current.is_recording() and _sending(current, queue):
            current.set_attribute("messaging.message.id", message.id)
            self._inject(message, None)
            return
        # One message of a batch, or a publish path without a send span of its own (fair
        # queues, campaigns, ordered queues): a create span per message.
        span = self.tracer.start_span(f"create {queue}", kind=SpanKind.PRODUCER, attributes={
            **_message_attributes(queue, message), "messaging.operation.type": "create",
            "messaging.operation.name": "create"})
        self._inject(message, trace.set_span_in_context(span))
        span.end()
        if batch is not None:
            batch.add_link(span.get_span_context())

    @staticmethod
    def _inject(message: Message, context: Context | None) -> None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context)
        if carrier:  # a new dict: the caller's headers dict may be reused for others
            message.headers = {**message.headers, **carrier}

    # -- consumer ----------------------------------------------------------------------

    async def around_handler(self, message: Message | list[Message], call_next: Call) -> Any:
        batch = message if isinstance(message, list) else [message]
        first = batch[0]
        parent = creation_context(first) if len(batch) == 1 else None
        links = [Link(trace.get_current_span(c).get_span_context())
                 for c in _contexts(batch)]
        attributes: dict[str, Any] = _message_attributes(first.queue, first) if len(
            batch) == 1 else {
            "messaging.system": SYSTEM, "messaging.destination.name": first.queue,
            "messaging.batch.message_count": len(batch)}
        attributes.update({"messaging.operation.type": "process",
                           "messaging.operation.name": "process",
                           "messaging.consumer.group.name": GROUP})
        with self.tracer.start_as_current_span(
                f"process {first.queue}", context=parent or Context(), kind=SpanKind.CONSUMER,
                links=links, attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                return await call_next()
            except BaseException as exc:
                name = type(exc).__qualname__
                if name not in _NOT_ERRORS:
                    span.set_attribute("error.type", name)
                    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))
                raise
            finally:
                self._remember(batch, trace.set_span_in_context(span))

    def _remember(self, batch: list[Message], context: Context) -> None:
        returned = time.time_ns()
        pending = self.pending
        for msg in batch:
            pending[(msg.id, msg.delivery)] = (context, returned)
        while len(pending) > MAX_PENDING:
            del pending[next(iter(pending))]

    # -- settling ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        msg = event.message
        if msg is None:
            return
        operation = _SETTLES.get(event.kind)
        remembered = self.pending.pop((msg.id, msg.delivery), None)
        if operation is None:
            return  # a lost lease forgets its process span: another worker settles it
        if remembered is not None:
            context, started = remembered
        else:
            context, started = creation_context(msg) or Context(), time.time_ns()
        attributes = {**_message_attributes(event.queue, msg),
                      "messaging.operation.type": "settle",
                      "messaging.operation.name": operation}
        if event.reason:
            attributes["tidings.reason"] = event.reason
        span = self.tracer.start_span(f"{operation} {event.queue}", context=context,
                                      kind=SpanKind.CLIENT, attributes=attributes,
                                      start_time=started)
        if event.kind is EventKind.DEAD_LETTERED:
            span.set_status(Status(StatusCode.ERROR, event.reason or "dead-lettered"))
        span.end()


def _sending(span: Any, queue: str) -> bool:
    """True if ``span`` is our own single-message send span for ``queue``."""
    return getattr(span, "name", None) == f"send {queue}"


def _contexts(batch: Iterable[Message]) -> list[Context]:
    return [c for c in (creation_context(m) for m in batch) if c is not None]


def _message_attributes(queue: str, message: Message) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.destination.name": queue,
        "messaging.message.id": message.id,
        "messaging.message.delivery_count": message.delivery,
        "tidings.attempt": message.attempts, "tidings.priority": message.priority.label}
    correlation = message.headers.get("correlation_id")
    if correlation:
        attributes["messaging.message.conversation_id"] = correlation
    return attributes


def configure_otlp(service_name: str = "tidings") -> TracerProvider:
    """Install the SDK with a batching OTLP/HTTP exporter (``tidings[otel]``); the exporter
    reads the standard ``OTEL_EXPORTER_OTLP_*`` variables. Returns the provider."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SdkProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
