"""What operators see, as middleware of the app: JSON logs with correlation ids, the
activity line, Prometheus metrics (per process and fleet-wide), health endpoints,
OpenTelemetry tracing, alert rules and an in-process evaluator, and the analytics hook.
``app.observability`` (:class:`~tidings.observability.extension.Observability`) installs
them."""
