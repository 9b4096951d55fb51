"""``python -m bench.observability``: what metrics and tracing cost a worker.

One worker drains a backlog of N messages with a no-op async handler, three ways, in the
same process against the same server:

* ``plain``: nothing installed;
* ``listener``: one middleware whose ``on_event`` does nothing: the floor every event
  consumer pays (the events are built only when something listens; ``tidings worker``
  always has listeners: the JSON log lines and the activity line);
* ``metrics``: ``app.observability.serve(port=0)`` (the per-process metrics middleware,
  the HTTP endpoints, the fleet reporter election);
* ``metrics_tracing``: the same plus ``app.observability.trace()`` with the OpenTelemetry
  SDK, a ``BatchSpanProcessor`` and an exporter that drops every span (so the figure is
  the cost of making spans, not of shipping them), every message traced;
* ``metrics_tracing_sampled``: the same with head sampling, the SDK's
  ``ParentBased(TraceIdRatioBased(0.1))`` (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``,
  ``OTEL_TRACES_SAMPLER_ARG=0.1``): one message in ten traced end to end.

Each round runs the three in a rotated order on fresh keys; the medians of the rounds
and their ratios to ``plain`` are printed as JSON and written to
``bench/results/observability.json``. The machine is shared and noisy: trust the ratios
of medians, not one round.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from tidings import Event, Middleware, Outgoing, Tidings

from .drain import count_to, drop_keys
from .job import payload, priority
from .stats import median, ratio, rounded, rounds_main

VARIANTS = ("plain", "listener", "metrics", "metrics_tracing", "metrics_tracing_sampled")
SAMPLED_RATIO = 0.1
CONCURRENCY = 256
TIMEOUT_S = 300.0


class Listener(Middleware):
    """Listens to every event and does nothing with it."""

    def on_event(self, event: Event) -> None:
        return None


class DroppingExporter(SpanExporter):
    """An exporter that accepts every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def make_app(url: str, variant: str) -> tuple[Tidings, TracerProvider | None]:
    app = Tidings(url, key_prefix=f"tbench-obs-{uuid.uuid4().hex[:10]}")
    provider = None
    if variant == "listener":
        app.add_middleware(Listener())
    elif variant != "plain":
        app.observability.serve(port=0, host="127.0.0.1")
    if variant.startswith("metrics_tracing"):
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(SAMPLED_RATIO))
                                  if variant.endswith("sampled") else None)
        provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
        app.observability.trace(provider)
    return app, provider


async def drain(url: str, variant: str, n: int) -> float:
    """Messages a second one worker drains with ``variant`` installed."""
    app, provider = make_app(url, variant)
    queue = app.queue("drain")
    done = count_to(queue, n, CONCURRENCY)

    async with app:
        try:
            await queue.publish_many(Outgoing(payload(i), priority=priority(i))
                                     for i in range(n))
            gc.collect()
            worker = app.worker(concurrency=CONCURRENCY)
            started = time.perf_counter()
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(done.wait(), TIMEOUT_S)
            elapsed = time.perf_counter() - started
            worker.stop()
            await task
        finally:
            await drop_keys(app)
            if provider is not None:
                provider.shutdown()
    return n / elapsed


async def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    per_round: list[dict[str, float]] = []
    for r in range(rounds):
        shift = r % len(VARIANTS)
        order = VARIANTS[shift:] + VARIANTS[:shift]
        figures = {}
        for variant in order:
            figures[variant] = await drain(url, variant, n)
            print(f"round {r + 1}/{rounds} {variant}: {figures[variant]:,.0f} msg/s",
                  file=sys.stderr, flush=True)
        per_round.append(figures)
    medians = {v: median([f[v] for f in per_round]) for v in VARIANTS}
    return {
        "messages": n, "rounds": rounds, "concurrency": CONCURRENCY,
        "msg_per_s": {v: rounded(m, 0) for v, m in medians.items()},
        "ratio_to_plain": {v: rounded(ratio(medians[v], medians["plain"]))
                           for v in VARIANTS[1:]},
        # Each round's own ratio (its variants ran back to back), then their median: less
        # exposed to the machine's load drifting between rounds.
        "ratio_per_round_median": {v: rounded(median([f[v] / f["plain"] for f in per_round]))
                                   for v in VARIANTS[1:]},
        "targets": {"metrics": 0.9, "metrics_tracing": 0.7},
        "sampled_ratio": SAMPLED_RATIO,
        "per_round": [{v: rounded(f[v], 0) for v in VARIANTS} for f in per_round],
    }


def main(argv: list[str] | None = None) -> None:
    rounds_main("python -m bench.observability", __doc__ or "", measure, "observability.json", argv)


if __name__ == "__main__":
    main()
