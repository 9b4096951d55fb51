"""What operators see: structured JSON logs of lifecycle events (metrics, tracing, health
and alerts come here too). Plugs in through the middleware interface."""
