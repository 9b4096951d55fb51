"""Per-process Prometheus metrics, counted from lifecycle events.

:class:`ProcessMetrics` is a middleware: ``on_event`` counts what happened to messages in
this process (published, delivered, acked ...), times handlers, end-to-end latency and
time in queue, and categorises handler failures by error type. It counts into plain
dicts and bucket lists on the event loop, which costs a few hundred nanoseconds an event
(prometheus-client's own metric objects take a lock and look up a label child per
call); the prometheus-client collector protocol turns the counts into metric families
only when ``/metrics`` is scraped. Labels are low-cardinality by construction: queue,
priority, outcome, error type, breaker and rate limit names, never a message id.

Fleet-wide figures (depth, oldest age, consumers, Redis memory) are not here: one
process's view of them would be wrong; :mod:`tidings.observability.fleet` reads them
from Redis.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..core.events import Event, EventKind
from ..core.middleware import Middleware, WorkerView
from ..queues.host import QueueHost

# Seconds. Latency buckets reach an hour: a backlog is worth seeing at its real size.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# Events about one message, counted as tidings_messages_<kind>_total{queue, priority}.
MESSAGE_KINDS = (EventKind.PUBLISHED, EventKind.DELIVERED, EventKind.ACKED,
                 EventKind.RETRIED, EventKind.SNOOZED, EventKind.RELEASED,
                 EventKind.DEAD_LETTERED, EventKind.EXPIRED, EventKind.LEASE_LOST)
_SETTLED = {EventKind.ACKED: "acked", EventKind.RETRIED: "retried",
            EventKind.SNOOZED: "snoozed", EventKind.DEAD_LETTERED: "dead_lettered"}
_BREAKER = {EventKind.BREAKER_OPENED: "open", EventKind.BREAKER_HALF_OPEN: "half_open",
            EventKind.BREAKER_CLOSED: "closed"}


class Histograms:
    """Histograms of one metric, one per label tuple: bucket counts and a sum."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        found = self.series.get(labels)
        if found is None:
            found = self.series[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        found[0][bisect_left(self.bounds, value)] += 1
        found[1] += value

    def family(self, name: str, doc: str, label_names: Sequence[str]) -> Metric:
        metric = HistogramMetricFamily(name, doc, labels=list(label_names))
        for labels, (counts, total) in self.series.items():
            running, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            metric.add_metric(list(labels), buckets, total)
        return metric


def error_type(event: Event) -> str:
    """The exception type of a failure event (``"TimeoutError: ..."`` -> TimeoutError)."""
    if event.error:
        head = event.error.split(":", 1)[0].strip()
        if head.isidentifier():
            return head
    return event.reason or "unknown"


class ProcessMetrics(Middleware):
    """Counts the lifecycle events of this process for Prometheus (see the module doc).

    It is also a prometheus-client collector: ``registry`` (its own by default, with the
    process, platform and GC collectors) serves it.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 process_collectors: bool = True) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.counts: defaultdict[tuple[EventKind, str, str], int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.handler = Histograms(HANDLER_BUCKETS)
        self.end_to_end = Histograms(LATENCY_BUCKETS)
        self.in_queue = Histograms(LATENCY_BUCKETS)
        self.rate_waits: dict[tuple[str, str], list[float]] = {}
        self.breakers: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.workers: list[WorkerView] = []
        self.heartbeat_ages: dict[str, float] = {}  # queue -> seconds (set by a refresh)
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.registry.register(self)
        self._handlers = {EventKind.ACKED: self._acked, EventKind.DELIVERED: self._delivered,
                          EventKind.RETRIED: self._settled, EventKind.SNOOZED: self._settled,
                          EventKind.DEAD_LETTERED: self._settled,
                          EventKind.RATE_LIMITED: self._rate_limited,
                          **dict.fromkeys(_BREAKER, self._breaker)}

    # -- counting ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        self.counts[event.kind, event.queue, event.priority] += 1
        handle = self._handlers.get(event.kind)
        if handle is not None:
            handle(event)

    def _acked(self, event: Event) -> None:
        if event.duration is not None:
            self.handler.observe((event.queue, "acked"), event.duration)
        msg = event.message
        if msg is not None:
            due = msg.not_before_ms if msg.not_before_ms is not None else msg.created_at_ms
            self.end_to_end.observe((event.queue, event.priority),
                                    max(0.0, event.timestamp - due / 1000))

    def _delivered(self, event: Event) -> None:
        msg = event.message
        if msg is not None and msg.attempts == 0 and msg.delivery <= 1:  # first delivery
            due = msg.not_before_ms if msg.not_before_ms is not None else msg.created_at_ms
            self.in_queue.observe((event.queue, event.priority),
                                  max(0.0, event.timestamp - due / 1000))

    def _settled(self, event: Event) -> None:
        """Retried, snoozed or dead-lettered: a handler outcome, a failure but for snooze."""
        if event.duration is None:
            return  # not from a handler call (poison, undecodable, expired)
        self.handler.observe((event.queue, _SETTLED[event.kind]), event.duration)
        if event.kind is not EventKind.SNOOZED:
            self.errors[event.queue, error_type(event)] += 1

    def _rate_limited(self, event: Event) -> None:
        waits = self.rate_waits.setdefault((event.queue, event.reason or ""), [0, 0.0])
        waits[0] += 1
        waits[1] += event.delay or 0.0

    def _breaker(self, event: Event) -> None:
        name = (event.reason or "").removeprefix("breaker ").split(":", 1)[0]
        self.breakers[name, _BREAKER[event.kind]] += 1

    async def on_worker_start(self, worker: WorkerView) -> None:
        self.workers.append(worker)

    async def on_worker_stop(self, worker: WorkerView) -> None:
        if worker in self.workers:
            self.workers.remove(worker)

    async def refresh_heartbeats(self, app: QueueHost) -> None:
        """Read the last heartbeat of this process's workers from Redis (server clock):
        what the fleet judges them by. Unknown while Redis does not answer."""
        asked = [(name, w.consumer) for w in list(self.workers) for name in w.queue_names]
        if not asked or not app.broker.connected:
            self.heartbeat_ages = {}
            return
        pipe = app.broker.client.pipeline(transaction=False)
        pipe.time()
        for name, consumer in asked:
            pipe.zscore(app.key_space.queue(name).consumers, consumer)
        try:
            (seconds, micros), *beats = await pipe.execute()
        except Exception:
            self.heartbeat_ages = {}
            return
        now = int(seconds) + int(micros) / 1e6
        self.heartbeat_ages = {name: max(0.0, now - beat / 1000)
                               for (name, _), beat in zip(asked, beats, strict=True)
                               if beat is not None}

    # -- the collector protocol ----------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._message_families()
        errors = CounterMetricFamily("tidings_handler_errors", "Handler calls that failed "
                                     "(retried or dead-lettered), by exception type.",
                                     labels=["queue", "error_type"])
        for labels, count in self.errors.items():
            errors.add_metric(list(labels), count)
        yield errors
        yield self.handler.family("tidings_handler_duration_seconds", "Handler call time, by "
                                  "outcome.", ["queue", "outcome"])
        yield self.end_to_end.family("tidings_end_to_end_latency_seconds", "From publish (or "
                                     "the end of its delay) to ack.", ["queue", "priority"])
        yield self.in_queue.family("tidings_time_in_queue_seconds", "From publish (or the end "
                                   "of its delay) to first delivery.", ["queue", "priority"])
        yield from self._flow_families()
        yield from self._worker_families()

    def _message_families(self) -> Iterator[Metric]:
        families = {kind: CounterMetricFamily(
            f"tidings_messages_{kind.value}", f"Messages {kind.value.replace('_', ' ')} by "
            "this process.", labels=["queue", "priority"]) for kind in MESSAGE_KINDS}
        for (kind, queue, priority), count in self.counts.items():
            family = families.get(kind)
            if family is not None:
                family.add_metric([queue, priority], count)
        yield from families.values()

    def _flow_families(self) -> Iterator[Metric]:
        waits = CounterMetricFamily("tidings_rate_limit_waits", "Fetches a queue rate limit "
                                    "made wait.", labels=["queue", "limit"])
        waited = CounterMetricFamily("tidings_rate_limit_wait_seconds", "Time fetches waited "
                                     "for rate-limit tokens.", labels=["queue", "limit"])
        for labels, (count, seconds) in self.rate_waits.items():
            waits.add_metric(list(labels), count)
            waited.add_metric(list(labels), seconds)
        transitions = CounterMetricFamily("tidings_breaker_transitions", "Circuit breaker "
                                          "state changes this process caused, by new state.",
                                          labels=["breaker", "state"])
        for labels, count in self.breakers.items():
            transitions.add_metric(list(labels), count)
        yield from (waits, waited, transitions)

    def _worker_families(self) -> Iterator[Metric]:
        workers = list(self.workers)
        yield GaugeMetricFamily("tidings_worker_up", "1 while a worker runs in this process "
                                "and is not shutting down.",
                                value=int(any(not w.stopping for w in workers)))
        yield GaugeMetricFamily("tidings_worker_in_flight_messages", "Messages handed to "
                                "handlers and not finished.",
                                value=sum(w.running for w in workers))
        ages = [age for w in workers if (age := w.fetch_loop_age()) is not None]
        fetch = GaugeMetricFamily("tidings_worker_fetch_loop_age_seconds", "Since the "
                                  "stalest fetch loop last went round.")
        if ages:
            fetch.add_metric([], max(ages))
        yield fetch
        beat = GaugeMetricFamily("tidings_worker_heartbeat_age_seconds", "Since this worker's "
                                 "last heartbeat reached Redis, by queue.", labels=["queue"])
        for queue, age in self.heartbeat_ages.items():
            beat.add_metric([queue], age)
        yield beat

    def describe(self) -> Iterator[Metric]:
        return self.collect()
