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

import asyncio
import os
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach, get_current
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)
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
MAX_LINKS = 128  # links per ack span (the SDK's default link limit)
_ROOT = Context()  # no parent: a new trace


@dataclass(frozen=True, slots=True)
class _Send:
    """The publish under way: its queue, send span, the context it started in, a batch?"""

    queue: str
    span: Span
    outer: Context
    batch: bool


_SENDING: ContextVar[_Send | None] = ContextVar("tidings_sending", default=None)
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

    def __init__(self, tracer_provider: TracerProvider | None = None, *,
                 follow_parent_sampling: bool = True) -> None:
        self.tracer = trace.get_tracer("tidings", tracer_provider=tracer_provider)
        # A message published unsampled is handled without a span of its own, under its
        # creation context, as the SDK's default parent-based sampler would decide anyway
        # (at a fraction of the cost). False: ask the sampler for every message.
        self.follow_parent_sampling = follow_parent_sampling
        # (message id, delivery) -> (its recorded process span, when its handler returned)
        self.pending: dict[tuple[str, int], tuple[SpanContext, int]] = {}
        self.acks: dict[str, list[tuple[SpanContext, int]]] = {}  # this turn's, by queue

    # -- producer ----------------------------------------------------------------------

    async def around_publish(self, queue: str, count: int, call_next: Call) -> Any:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM, "messaging.destination.name": queue,
            "messaging.operation.type": "send"}
        if count > 1:
            attributes["messaging.batch.message_count"] = count
        kind = SpanKind.PRODUCER if count == 1 else SpanKind.CLIENT
        outer = get_current()
        span = self.tracer.start_span(f"send {queue}", kind=kind, attributes=attributes)
        token = attach(trace.set_span_in_context(span))
        # A batch's create spans start from the caller's context, not the send span's:
        # each message is its own trace (or a child of the caller's), sampled on its own.
        batch = _SENDING.set(_Send(queue, span, outer, count > 1))
        try:
            return await call_next()
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            _SENDING.reset(batch)
            detach(token)
            span.end()

    def before_publish(self, queue: str, message: Message) -> None:
        sending = _SENDING.get()
        if sending is not None and sending.queue != queue:
            sending = None  # another queue's publish inside ours (a before_publish hook?)
        if sending is not None and not sending.batch:
            if sending.span.is_recording():
                sending.span.set_attribute("messaging.message.id", message.id)
            self._inject(message, None)  # the send span is the creation context
            return
        # One message of a batch, or a publish path without a send span of its own (fair
        # queues, campaigns, ordered queues): a create span per message.
        span = self.tracer.start_span(
            f"create {queue}", context=sending.outer if sending else None,
            kind=SpanKind.PRODUCER, attributes={
                "messaging.system": SYSTEM, "messaging.destination.name": queue,
                "messaging.operation.type": "create", "messaging.message.id": message.id})
        self._inject(message, trace.set_span_in_context(span))
        span.end()
        if sending is not None and sending.span.is_recording():
            sending.span.add_link(span.get_span_context())

    @staticmethod
    def _inject(message: Message, context: Context | None) -> None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context)
        if carrier:  # a new dict: the caller's headers dict may be reused for others
            message.headers = {**message.headers, **carrier}

    # -- consumer ----------------------------------------------------------------------

    async def around_handler(self, message: Message | list[Message], call_next: Call) -> Any:
        # start_span and attach by hand: start_as_current_span's context managers cost
        # more than the span itself.
        if isinstance(message, list):
            span = self._batch_span(message)
            batch = message
        else:
            parent = creation_context(message)
            if parent is not None and self.follow_parent_sampling and not trace.get_current_span(
                    parent).get_span_context().trace_flags.sampled:
                return await _under(parent, call_next)
            span = self.tracer.start_span(
                f"process {message.queue}", context=parent or _ROOT,
                kind=SpanKind.CONSUMER, attributes=_consumer_attributes(message))
            batch = [message]
        token = attach(trace.set_span_in_context(span))
        try:
            return await call_next()
        except BaseException as exc:
            if type(exc).__qualname__ not in _NOT_ERRORS:
                _failed(span, exc)
            raise
        finally:
            detach(token)
            span.end()
            if span.get_span_context().trace_flags.sampled:  # only spans that are kept
                self._remember(batch, span.get_span_context())

    def _batch_span(self, batch: list[Message]) -> Span:
        first = batch[0]
        links = [Link(trace.get_current_span(c).get_span_context()) for c in _contexts(batch)]
        return self.tracer.start_span(
            f"process {first.queue}", context=_ROOT, kind=SpanKind.CONSUMER, links=links,
            attributes={"messaging.system": SYSTEM, "messaging.destination.name": first.queue,
                        "messaging.operation.type": "process",
                        "messaging.consumer.group.name": GROUP,
                        "messaging.batch.message_count": len(batch)})

    def _remember(self, batch: list[Message], process: SpanContext) -> None:
        returned = time.time_ns()
        pending = self.pending
        for msg in batch:
            pending[(msg.id, msg.delivery)] = (process, returned)
        while len(pending) > MAX_PENDING:
            del pending[next(iter(pending))]

    # -- settling ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        msg = event.message
        operation = _SETTLES.get(event.kind)
        if msg is None or (operation is None and event.kind is not EventKind.LEASE_LOST):
            return
        remembered = self.pending.pop((msg.id, msg.delivery), None)
        if operation is None:
            return  # a lost lease forgets its process span: another worker settles it
        if event.kind is EventKind.ACKED:
            if remembered is not None:
                self._ack_later(event.queue, remembered)
            return
        if remembered is not None:
            parent: Context = trace.set_span_in_context(NonRecordingSpan(remembered[0]))
            started = remembered[1]
        else:  # no handler ran here (poison, expired): under the creation context
            parent, started = creation_context(msg) or _ROOT, time.time_ns()
        attributes = {"messaging.system": SYSTEM, "messaging.destination.name": event.queue,
                      "messaging.operation.type": "settle", "messaging.message.id": msg.id}
        if event.reason:
            attributes["tidings.reason"] = event.reason
        span = self.tracer.start_span(f"{operation} {event.queue}", context=parent,
                                      kind=SpanKind.CLIENT, attributes=attributes,
                                      start_time=started)
        if event.kind is EventKind.DEAD_LETTERED:
            span.set_status(Status(StatusCode.ERROR, event.reason or "dead-lettered"))
        span.end()

    def _ack_later(self, queue: str, remembered: tuple[SpanContext, int]) -> None:
        """Acks are settled in batches (one round trip each): one ack span per batch,
        linked to the process span of every message in it, made once the batch's events
        are all in (the end of this turn of the event loop)."""
        acks = self.acks.get(queue)
        if acks is None:
            acks = self.acks[queue] = []
            asyncio.get_running_loop().call_soon(self._ack_spans, queue)
        acks.append(remembered)

    def _ack_spans(self, queue: str) -> None:
        acks = self.acks.pop(queue, [])
        for start in range(0, len(acks), MAX_LINKS):
            chunk = acks[start:start + MAX_LINKS]
            span = self.tracer.start_span(
                f"ack {queue}", context=_ROOT, kind=SpanKind.CLIENT,
                links=[Link(process) for process, _ in chunk],
                start_time=min(returned for _, returned in chunk), attributes={
                    "messaging.system": SYSTEM, "messaging.destination.name": queue,
                    "messaging.operation.type": "settle",
                    "messaging.batch.message_count": len(chunk)})
            span.end()


async def _under(context: Context, call_next: Call) -> Any:
    token = attach(context)
    try:
        return await call_next()
    finally:
        detach(token)


def _failed(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))


def _contexts(batch: Iterable[Message]) -> list[Context]:
    return [c for c in (creation_context(m) for m in batch) if c is not None]


def _consumer_attributes(message: Message) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.destination.name": message.queue,
        "messaging.operation.type": "process", "messaging.message.id": message.id,
        "messaging.message.delivery_count": message.delivery,
        "messaging.consumer.group.name": GROUP}
    correlation = message.headers.get("correlation_id")
    if correlation:
        attributes["messaging.message.conversation_id"] = correlation
    return attributes


def configure_otlp(service_name: str = "tidings") -> TracerProvider:
    """Install the SDK with a batching OTLP/HTTP exporter (``tidings[otel]``) as the global
    tracer provider, unless one is installed already; returns the provider in use.

    The SDK reads the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the other
    ``OTEL_EXPORTER_OTLP_*``), ``OTEL_SERVICE_NAME`` (else ``service_name``),
    ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``. Raises ImportError without the extra.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        return current  # the application configured its own
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = SdkProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
