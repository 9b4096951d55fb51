"""The app's observability: one object per app (``app.observability``) that installs the
parts on request, each as a middleware of the app, each at most once::

    obs = app.observability
    obs.serve(port=9464)           # /metrics, /livez, /readyz, /stats from every worker
    obs.trace()                    # OpenTelemetry spans (configure the SDK yourself, or
                                   # tracing.configure_otlp() with tidings[otel])
    obs.evaluate_alerts()          # alert_firing / alert_resolved events, no Prometheus
    obs.analytics(HttpSink(url))   # lifecycle events to an analytics service

``install_from_settings()`` does what the ``TIDINGS_METRICS_*``, ``TIDINGS_TRACING``,
``TIDINGS_ALERT_EVALUATOR`` and ``TIDINGS_ANALYTICS_*`` settings ask; ``tidings worker``
calls it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.thresholds import AlertSettings

log = logging.getLogger("tidings.observability")

# The parts are imported when installed: a worker with none of them on does not pay for
# aiohttp, httpx, prometheus-client and OpenTelemetry at start-up (about 0.2 s here).
if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from ..queues.host import ExtensionHost
    from .analytics import AnalyticsHook, RedisStreamSink, Sink
    from .endpoints import WorkerEndpoints
    from .evaluator import AlertEvaluator
    from .fleet import BreakerSource
    from .metrics import ProcessMetrics
    from .tracing import Tracing


class Observability:
    """Metrics, health endpoints, tracing, alerts and analytics of one app."""

    def __init__(self, app: ExtensionHost) -> None:
        self.app = app
        self.breakers: BreakerSource | None = None  # the app wires flow control's breakers
        self._metrics: ProcessMetrics | None = None
        self.endpoints: WorkerEndpoints | None = None
        self.tracing: Tracing | None = None
        self.evaluator: AlertEvaluator | None = None
        self.hooks: list[AnalyticsHook] = []
        self.alert_settings: AlertSettings = app.settings.alerts

    def thresholds(self, queue: str | None = None, **values: float | None) -> AlertSettings:
        """Set alert thresholds in code: the defaults (no ``queue``) or one queue's
        (``None`` turns an alert off). The rules and the evaluator use them."""
        current = self.alert_settings
        if queue is None:
            self.alert_settings = AlertSettings(**{**current.model_dump(), **values})
        else:
            self.alert_settings = current.with_queue(queue, **values)
        if self.evaluator is not None:
            self.evaluator.settings = self.alert_settings
        return self.alert_settings

    @property
    def metrics(self) -> ProcessMetrics:
        """The process's metrics (installed on first use)."""
        if self._metrics is None:
            from .metrics import ProcessMetrics

            self._metrics = ProcessMetrics()
            self.app.add_middleware(self._metrics)
            for hook in self.hooks:
                self._metrics.registry.register(hook)
        return self._metrics

    def serve(self, port: int = 9464, *, host: str = "0.0.0.0", fleet: bool = True,
              deadline: float = 60.0) -> WorkerEndpoints:
        """Serve ``/metrics``, ``/livez``, ``/readyz`` and ``/stats`` from every worker on
        ``host:port`` (0: any free port; ``endpoints.port_of(worker)`` tells which).
        ``fleet``: the worker elected fleet reporter adds the fleet-wide metrics."""
        if self.endpoints is None:
            from .endpoints import WorkerEndpoints

            self.endpoints = WorkerEndpoints(self.app, self.metrics, port=port, host=host,
                                             fleet=fleet, deadline=deadline,
                                             breakers=self.breakers)
            self.app.add_middleware(self.endpoints)
        return self.endpoints

    def trace(self, tracer_provider: TracerProvider | None = None) -> Tracing:
        """Trace publishes, handler calls and settles (default: the global provider)."""
        if self.tracing is None:
            from .tracing import Tracing

            self.tracing = Tracing(tracer_provider)
            self.app.add_middleware(self.tracing)
        return self.tracing

    def evaluate_alerts(self, *, every: float = 15.0) -> AlertEvaluator:
        """Evaluate the alert thresholds in the fleet reporter worker (no Prometheus)."""
        if self.evaluator is None:
            from .evaluator import AlertEvaluator

            self.evaluator = AlertEvaluator(self.app, self.alert_settings, every=every,
                                            metrics=self.metrics, breakers=self.breakers)
            self.app.add_middleware(self.evaluator)
        return self.evaluator

    def analytics(self, sink: Sink, *, batch_size: int = 500, flush_every: float = 1.0,
                  max_buffer: int = 10_000, send_timeout: float = 5.0) -> AnalyticsHook:
        """Stream lifecycle events to ``sink`` in batches (see :mod:`.analytics`)."""
        from .analytics import AnalyticsHook

        hook = AnalyticsHook(sink, batch_size=batch_size, flush_every=flush_every,
                             max_buffer=max_buffer, send_timeout=send_timeout)
        self.hooks.append(hook)
        self.app.add_middleware(hook)
        if self._metrics is not None:
            self._metrics.registry.register(hook)
        return hook

    def redis_stream(self, name: str) -> RedisStreamSink:
        """A sink appending to the app's analytics stream ``name`` on its connection."""
        from .analytics import RedisStreamSink

        return RedisStreamSink(self.app.key_space.analytics(name), host=self.app)

    @staticmethod
    def _otlp_provider() -> TracerProvider | None:
        """The SDK with its OTLP exporter, or None (no SDK: spans are not recorded)."""
        from .tracing import configure_otlp

        try:
            return configure_otlp()
        except ImportError:
            log.warning("TIDINGS_TRACING is on but the OpenTelemetry SDK and OTLP exporter "
                        "are not installed (pip install 'tidings[otel]'); no span is recorded")
            return None

    def install_from_settings(self) -> None:
        """Install what the app's settings ask for (``tidings worker`` calls this)."""
        s = self.app.settings
        if s.metrics_port is not None:
            self.serve(s.metrics_port, host=s.metrics_host, fleet=s.metrics_fleet,
                       deadline=s.liveness_deadline)
        if s.tracing:
            self.trace(self._otlp_provider())
        if s.alert_evaluator:
            self.evaluate_alerts()
        if s.analytics_stream:
            self.analytics(self.redis_stream(s.analytics_stream))
        if s.analytics_url:
            from .analytics import HttpSink

            self.analytics(HttpSink(s.analytics_url))
