"""The analytics hook: lifecycle events in batches to a Redis stream and to an HTTP
endpoint; a sink that is down costs the worker nothing and drops with a counter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web

from conftest import Recorder
from obs_helpers import http_stand_in, samples, scrape_text, value
from servers import free_port
from tidings import Event, EventKind, Message, Tidings
from tidings.observability.analytics import AnalyticsHook, HttpSink


async def test_events_reach_a_redis_stream_in_batches(make_app: Callable[..., Tidings],
                                                      recorder: Recorder) -> None:
    app = make_app(middleware=[recorder])
    email = app.queue("email")
    email.handler(_noop)
    hook = app.observability.analytics(app.observability.redis_stream("events"),
                                       batch_size=4, flush_every=0.05)
    async with app:
        await email.publish_many(["a", "b", "c"], chunk_size=10)
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 3)
        await hook.flush()
        entries = await app.broker.client.xrange(app.key_space.analytics("events"))
    records = [orjson.loads(fields[b"e"]) for _, fields in entries]
    kinds = [r["kind"] for r in records]
    assert kinds.count("published") == kinds.count("delivered") == kinds.count("acked") == 3
    assert {r["queue"] for r in records} == {"email"}
    assert all(r["message_id"] for r in records)
    assert hook.sent == len(records) == 9 and hook.dropped == 0


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[list[dict[str, Any]]]]]:
    """An HTTP analytics service on a free port that records each POSTed batch."""
    batches: list[list[dict[str, Any]]] = []

    async def receive(request: web.Request) -> web.Response:
        batches.append(await request.json())
        return web.Response(status=202)

    async with http_stand_in("/events", receive) as port:
        yield f"http://127.0.0.1:{port}/events", batches


async def test_events_reach_an_http_sink_as_json_batches(
        make_app: Callable[..., Tidings], recorder: Recorder,
        collector: tuple[str, list[list[dict[str, Any]]]]) -> None:
    url, batches = collector
    app = make_app(middleware=[recorder])
    email = app.queue("email")
    email.handler(_noop)
    hook = app.observability.analytics(HttpSink(url), batch_size=100, flush_every=0.05)
    async with app:
        ids = await email.publish_many(["a", "b"])
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 2)
        await hook.aclose()
    received = [event for batch in batches for event in batch]
    acked = sorted(e["message_id"] for e in received if e["kind"] == "acked")
    assert acked == sorted(ids)
    assert all(isinstance(batch, list) and batch for batch in batches)


async def test_a_sink_that_is_down_drops_with_a_counter_and_never_blocks(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    app = make_app(middleware=[recorder])
    email = app.queue("email")
    email.handler(_noop)
    down = HttpSink(f"http://127.0.0.1:{free_port()}/events", timeout=0.5)  # nobody listens
    hook = app.observability.analytics(down, batch_size=5, flush_every=0.01, max_buffer=10)
    endpoints = app.observability.serve(port=0, host="127.0.0.1")
    async with app:
        await email.publish_many(list(range(20)))
        async with app.worker() as worker:
            await recorder.wait_count(EventKind.ACKED, 20)  # the worker went on regardless
            await asyncio.wait_for(hook.failing.wait(), 20)
            found = samples(await scrape_text(endpoints.port_of(worker)))
        await hook.aclose()
    # 60 events (published, delivered, acked x 20) into a buffer of 10: the rest dropped.
    assert len(hook.buffer) <= 10
    assert hook.sent == 0
    assert hook.dropped >= 50 and hook.dropped + len(hook.buffer) == 60
    assert (value(found, "tidings_analytics_dropped_events_total") or 0) >= 50
    assert (value(found, "tidings_analytics_failed_batches_total") or 0) >= 1


async def test_on_event_only_appends_to_the_buffer() -> None:
    class Never:
        async def send(self, batch: Any) -> None:
            await asyncio.Event().wait()  # a sink that never answers

        async def aclose(self) -> None:
            return None

    hook = AnalyticsHook(Never(), batch_size=2, flush_every=0.01, max_buffer=3,
                         send_timeout=0.05)
    for i in range(5):
        hook.on_event(Event(EventKind.PUBLISHED, "email", f"m{i}"))
    assert len(hook.buffer) == 3 and hook.dropped == 2
    await asyncio.wait_for(hook.failing.wait(), 20)
    await hook.aclose()


async def _noop(msg: Message) -> None:
    return None


async def test_a_batch_being_sent_when_the_flusher_stops_is_not_lost() -> None:
    class SlowOnce:
        """A sink whose first send hangs (until cancelled); later sends arrive."""

        def __init__(self) -> None:
            self.received: list[dict[str, Any]] = []
            self.sending = asyncio.Event()

        async def send(self, batch: Any) -> None:
            if not self.sending.is_set():
                self.sending.set()
                await asyncio.Event().wait()
            self.received += batch

        async def aclose(self) -> None:
            return None

    sink = SlowOnce()
    hook = AnalyticsHook(sink, batch_size=2, flush_every=0.01)
    hook.on_event(Event(EventKind.PUBLISHED, "email", "m1"))
    hook.on_event(Event(EventKind.PUBLISHED, "email", "m2"))
    await asyncio.wait_for(sink.sending.wait(), 20)  # the flusher is inside send()
    await hook.flush()  # what the worker's stop does: cancels the flusher, sends the rest
    assert [r["message_id"] for r in sink.received] == ["m1", "m2"]
    assert hook.dropped == 0 and not hook.buffer
