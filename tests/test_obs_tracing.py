"""OpenTelemetry tracing with the SDK's in-memory exporter: the span tree, links and
attributes across a real publish, a retry and a dead letter; batches; log correlation;
and a ``tidings worker`` process exporting over OTLP."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import Recorder
from fault_helpers import ROOT, TIDINGS_BIN
from obs_helpers import http_stand_in
from tidings import DeadLetter, EventKind, Message, Retry, Tidings
from tidings.observability.logs import LogContext, configure_logging


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def traced(make_app: Callable[..., Tidings], recorder: Recorder,
           provider: TracerProvider) -> Tidings:
    """An app traced through ``provider``, recording events, with a queue ``email``."""
    app = make_app(middleware=[recorder])
    app.observability.trace(provider)
    app.queue("email")
    return app


async def handled(app: Tidings, recorder: Recorder, payloads: list[str]) -> list[str]:
    """Publish ``payloads`` as one batch and let a worker ack them all; returns the ids."""
    async with app:
        ids = await app.get_queue("email").publish_many(payloads)
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, len(payloads))
    return ids


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_publish_retry_and_dead_letter_share_one_trace(
        make_app: Callable[..., Tidings], recorder: Recorder, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    app = make_app(middleware=[recorder])
    app.observability.trace(provider)
    email = app.queue("email")

    @email.handler
    async def handle(msg: Message) -> None:
        if msg.attempts == 0:
            raise Retry(timedelta(milliseconds=10))
        raise DeadLetter("recipient unsubscribed")

    async with app:
        msg_id = await email.publish({"to": "a@b.c"}, correlation_id="order-42")
        async with app.worker():
            await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    spans = exporter.get_finished_spans()
    (send,) = by_name(spans, "send email")
    first, second = sorted(by_name(spans, "process email"), key=lambda s: s.start_time or 0)
    (retry,) = by_name(spans, "retry email")
    (dead,) = by_name(spans, "dead_letter email")
    assert send.kind is SpanKind.PRODUCER
    assert send.attributes["messaging.message.id"] == msg_id
    assert send.attributes["messaging.system"] == "redis"
    # One trace: both attempts are children of the publish, each settle of its attempt.
    assert {s.context.trace_id for s in (send, first, second, retry, dead)} == {
        send.context.trace_id}
    assert parent_id(first) == parent_id(second) == send.context.span_id
    assert parent_id(retry) == first.context.span_id
    assert parent_id(dead) == second.context.span_id
    for process in (first, second):
        assert process.kind is SpanKind.CONSUMER
        assert process.attributes["messaging.destination.name"] == "email"
        assert process.attributes["messaging.message.id"] == msg_id
        assert process.attributes["messaging.message.conversation_id"] == "order-42"
        assert process.attributes["messaging.consumer.group.name"] == "tidings"
        assert process.attributes["messaging.message.delivery_count"] == 1
        assert process.status.status_code is StatusCode.ERROR
    assert first.attributes["error.type"] == "Retry"
    assert second.attributes["error.type"] == "DeadLetter"
    assert retry.kind is dead.kind is SpanKind.CLIENT
    assert dead.attributes["messaging.operation.type"] == "settle"
    assert dead.status.status_code is StatusCode.ERROR


async def test_an_ack_span_links_the_process_spans_it_settled(
        traced: Tidings, recorder: Recorder, exporter: InMemorySpanExporter) -> None:
    traced.get_queue("email").handler(_noop)
    await handled(traced, recorder, ["x"])
    spans = exporter.get_finished_spans()
    (process,) = by_name(spans, "process email")
    (ack,) = by_name(spans, "ack email")
    assert process.status.status_code is StatusCode.UNSET
    assert ack.kind is SpanKind.CLIENT
    assert [link.context.span_id for link in ack.links] == [process.context.span_id]
    assert ack.attributes["messaging.batch.message_count"] == 1


async def test_a_batch_publish_makes_a_create_span_per_message(
        traced: Tidings, recorder: Recorder, exporter: InMemorySpanExporter) -> None:
    traced.get_queue("email").handler(_noop)
    ids = await handled(traced, recorder, ["a", "b", "c"])
    spans = exporter.get_finished_spans()
    (send,) = by_name(spans, "send email")
    creates = by_name(spans, "create email")
    assert send.kind is SpanKind.CLIENT
    assert send.attributes["messaging.batch.message_count"] == 3
    assert sorted(c.attributes["messaging.message.id"] for c in creates) == sorted(ids)
    assert all(c.kind is SpanKind.PRODUCER for c in creates)
    assert {link.context.span_id for link in send.links} == {c.context.span_id for c in creates}
    # Each message is its own trace, handled under its create span.
    processes = by_name(spans, "process email")
    assert {parent_id(p) for p in processes} == {c.context.span_id for c in creates}


async def test_a_batch_handler_call_links_every_message(
        traced: Tidings, recorder: Recorder, exporter: InMemorySpanExporter) -> None:
    @traced.get_queue("email").handler(batch_size=10, batch_wait=0.2)
    async def handle(batch: list[Message]) -> None:
        return None

    await handled(traced, recorder, ["a", "b"])
    spans = exporter.get_finished_spans()
    creates = {c.context.span_id for c in by_name(spans, "create email")}
    processes = by_name(spans, "process email")
    linked = {link.context.span_id for p in processes for link in p.links}
    assert linked == creates
    assert sum(p.attributes["messaging.batch.message_count"] for p in processes) == 2


async def test_handler_log_lines_carry_message_and_trace_ids(
        make_app: Callable[..., Tidings], recorder: Recorder, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", json=True, stream=stream)
    app = make_app(middleware=[recorder, LogContext()])
    app.observability.trace(provider)
    email = app.queue("email")

    @email.handler
    async def handle(msg: Message) -> None:
        structlog.get_logger("myapp").info("sending")
        logging.getLogger("myapp.stdlib").warning("stdlib line")

    try:
        async with app:
            msg_id = await email.publish("x", correlation_id="order-7")
            async with app.worker():
                await recorder.wait_count(EventKind.ACKED, 1)
    finally:
        logging.getLogger().removeHandler(handler)
    (process,) = by_name(exporter.get_finished_spans(), "process email")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("logger", "").startswith("myapp")]
    assert [line["event"] for line in mine] == ["sending", "stdlib line"]
    for line in mine:
        assert line["message_id"] == msg_id
        assert line["queue"] == "email"
        assert line["correlation_id"] == "order-7"
        assert line["trace_id"] == format(process.context.trace_id, "032x")
        assert line["span_id"] == format(process.context.span_id, "016x")


async def _noop(msg: Message) -> None:
    return None


async def test_tidings_worker_exports_spans_over_otlp(cli_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    """TIDINGS_TRACING=true: a ``tidings worker`` process sends its spans over OTLP/HTTP
    (tidings[otel]) to a collector, here a stand-in that records what is POSTed."""
    posts: list[bytes] = []
    received = asyncio.Event()

    async def collect(request: web.Request) -> web.Response:
        posts.append(await request.read())
        received.set()
        return web.Response(status=200, content_type="application/x-protobuf")

    app = Tidings(cli_env["TIDINGS_REDIS_URL"], key_prefix=cli_env["TIDINGS_KEY_PREFIX"])
    async with app:
        await app.queue("email").publish("x")
    async with http_stand_in("/v1/traces", collect) as port:
        env = {**os.environ, **cli_env, "TIDINGS_TRACING": "true",
               "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
               "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "email-worker"}
        with (tmp_path / "worker.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(TIDINGS_BIN), "worker", "tests.apps.cli_app:app", cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT)
            try:
                await asyncio.wait_for(received.wait(), 60)
            finally:
                proc.terminate()  # by its PID; SIGTERM: the worker drains and exits
                await asyncio.wait_for(proc.wait(), 30)
    body = b"".join(posts)
    assert b"process email" in body and b"email-worker" in body
