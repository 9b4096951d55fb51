"""The standalone exporter (``tidings exporter``): fleet-wide metrics, ``/stats`` and
health, with no worker. Run one per fleet (or rely on the worker-elected reporter)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from ..engine.tls import http_ssl_context
from ..queues.host import ExtensionHost
from .fleet import BreakerSource, FleetCollector
from .health import Health
from .server import ObservabilityServer


async def run_exporter(app: ExtensionHost, *, host: str = "0.0.0.0", port: int = 9465,
                       breakers: BreakerSource | None = None,
                       on_ready: Callable[[int], None] | None = None,
                       stop: asyncio.Event | None = None) -> None:
    """Serve ``/metrics`` (fleet figures and this process), ``/stats``, ``/livez`` and
    ``/readyz`` until ``stop`` is set (or SIGTERM/SIGINT, when ``stop`` is not given)."""
    await app.connect()
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    fleet = FleetCollector(app, breakers)
    registry.register(fleet)

    async def stats() -> dict[str, Any]:
        await fleet.refresh()
        return {"error": fleet.error, **(fleet.snapshot.as_dict() if fleet.snapshot else {})}

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    server = ObservabilityServer(registry, health=Health(app, None), refresh=[fleet.refresh],
                                 stats=stats, host=host, port=port,
                                 ssl_context=http_ssl_context(app.settings.security))
    bound = await server.start()
    try:
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
    finally:
        await server.stop()
