"""The analytics hook: lifecycle events streamed in batches to an analytics sink.

:class:`AnalyticsHook` is a middleware whose ``on_event`` only appends the event to a
bounded buffer (a few hundred nanoseconds; it never waits). A flusher task, started with
the first event, sends the buffer in batches of up to ``batch_size`` every
``flush_every`` seconds, or as soon as a batch is full, to a sink:

- :class:`RedisStreamSink`: one entry per event (field ``e``, the event as JSON) in a
  stream that another service consumes (``XREADGROUP``), capped near ``maxlen`` entries;
- :class:`HttpSink`: a ``POST`` of the batch as a JSON array (httpx).

When the sink is down or slow the worker does not wait for it: a failed batch goes back
to the front of the buffer and is tried again, and once the buffer holds ``max_buffer``
events new ones are dropped and counted (``dropped``, and the metric
``tidings_analytics_dropped_events_total``). Nothing is silently lost: the counter says
how much.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import httpx
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..core.events import Event
from ..core.middleware import Middleware, WorkerView
from ..queues.host import QueueHost

log = logging.getLogger("tidings.observability")
_FIELDS = ("kind", "queue", "message_id", "priority", "attempt", "correlation_id", "duration",
           "delay", "reason", "error", "timestamp")


def event_record(event: Event) -> dict[str, Any]:
    """The JSON-ready form of an event (no payload: analytics get the facts, not content)."""
    record = {name: getattr(event, name) for name in _FIELDS}
    record["kind"] = event.kind.value
    return record


class Sink(Protocol):
    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        """Deliver ``batch``; raise if it did not arrive."""

    async def aclose(self) -> None: ...


class RedisStreamSink:
    """Appends each event to the stream ``key`` (``KeySpace.analytics(name)``), through
    ``client``, or the connection of ``host`` (an app) at the time of each batch."""

    def __init__(self, key: str, client: Any = None, *, host: QueueHost | None = None,
                 maxlen: int = 1_000_000) -> None:
        if client is None and host is None:
            raise ValueError("give a client or a host")
        self.key = key
        self.client = client
        self.host = host
        self.maxlen = maxlen

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        client = self.client if self.host is None else self.host.broker.client
        pipe = client.pipeline(transaction=False)
        for record in batch:
            pipe.xadd(self.key, {"e": orjson.dumps(record)}, maxlen=self.maxlen,
                      approximate=True)
        await pipe.execute()

    async def aclose(self) -> None:
        return None


class HttpSink:
    """POSTs each batch to ``url`` as a JSON array; any status >= 400 is a failure."""

    def __init__(self, url: str, *, timeout: float = 5.0,
                 headers: dict[str, str] | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.client = client or httpx.AsyncClient(timeout=timeout, headers=headers)

    async def send(self, batch: Sequence[dict[str, Any]]) -> None:
        response = await self.client.post(self.url, content=orjson.dumps(list(batch)),
                                          headers={"content-type": "application/json"})
        response.raise_for_status()

    async def aclose(self) -> None:
        await self.client.aclose()


class AnalyticsHook(Middleware):
    """Streams lifecycle events to ``sink`` in batches (see the module docstring)."""

    def __init__(self, sink: Sink, *, batch_size: int = 500, flush_every: float = 1.0,
                 max_buffer: int = 10_000, send_timeout: float = 5.0) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_every = flush_every
        self.max_buffer = max_buffer
        self.send_timeout = send_timeout
        self.buffer: deque[dict[str, Any]] = deque()
        self.sent = self.dropped = self.failed_batches = 0
        self._full = asyncio.Event()
        self.failing = asyncio.Event()  # set while the sink fails, cleared when it takes one
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def on_event(self, event: Event) -> None:
        if len(self.buffer) >= self.max_buffer:
            self.dropped += 1
            return
        self.buffer.append(event_record(event))
        if len(self.buffer) >= self.batch_size:
            self._full.set()
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._full.wait(), self.flush_every)
            except TimeoutError:
                pass
            self._full.clear()
            while not self._stopping and self.buffer and await self.flush_once():
                if len(self.buffer) < self.batch_size:
                    break

    async def flush_once(self) -> bool:
        """Send one batch; False (and the batch kept, room permitting) if it failed."""
        batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
        if not batch:
            return True
        try:
            await asyncio.wait_for(self.sink.send(batch), self.send_timeout)
        except asyncio.CancelledError:
            self._requeue(batch)  # stopped mid-send (a flush, the worker stopping): keep it
            raise
        except Exception as exc:
            self.failed_batches += 1
            self.failing.set()
            self._requeue(batch)
            log.warning("analytics sink failed (%s: %s); %d events buffered, %d dropped so far",
                        type(exc).__name__, exc, len(self.buffer), self.dropped)
            return False
        self.sent += len(batch)
        self.failing.clear()
        return True

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        """Put an unsent batch back in front, as much as there is room for (the rest is
        dropped and counted)."""
        room = max(0, self.max_buffer - len(self.buffer))
        self.buffer.extendleft(reversed(batch[:room]))
        self.dropped += max(0, len(batch) - room)

    async def flush(self) -> None:
        """Stop the flusher (the next event starts it again) and send what is buffered,
        until the buffer is empty or the sink fails."""
        if self._task is not None:
            # Asked to stop, not cancelled: a batch cancelled after the sink took it would
            # be put back and sent twice.
            task, self._task = self._task, None
            self._stopping = True
            self._full.set()
            await asyncio.gather(task, return_exceptions=True)
        while self.buffer and await self.flush_once():
            pass

    async def aclose(self) -> None:
        """Flush, then close the sink."""
        await self.flush()
        await self.sink.aclose()

    async def on_worker_stop(self, worker: WorkerView) -> None:
        await self.flush()

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("tidings_analytics_sent_events", "Events the analytics "
                                  "sink accepted.", value=self.sent)
        yield CounterMetricFamily("tidings_analytics_dropped_events", "Events dropped: the "
                                  "analytics buffer was full.", value=self.dropped)
        yield CounterMetricFamily("tidings_analytics_failed_batches", "Batches the analytics "
                                  "sink refused or did not answer in time.",
                                  value=self.failed_batches)
        yield GaugeMetricFamily("tidings_analytics_buffered_events", "Events waiting for the "
                                "analytics sink.", value=len(self.buffer))

    def describe(self) -> Iterator[Metric]:
        return self.collect()
