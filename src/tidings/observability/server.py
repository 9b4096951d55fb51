"""The HTTP endpoints: ``/metrics``, ``/livez``, ``/readyz`` and ``/stats``, on aiohttp.

aiohttp's ``AppRunner`` runs inside the worker's own event loop and installs no signal
handlers, so the worker keeps its SIGTERM handling; ``/metrics`` is prometheus-client's
own aiohttp handler (content negotiation, OpenMetrics, compression).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from ..core.errors import ConfigError
from .health import Health

Refresh = Callable[[], Awaitable[None]]
StatsSource = Callable[[], Awaitable[dict[str, Any]]]


def _json(body: dict[str, Any], ok: bool = True) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=200 if ok else 503,
                        content_type="application/json")


class ObservabilityServer:
    """Serves a registry's metrics and the health checks on ``host:port`` (0: any free port).

    ``refresh`` callables run before each scrape (fleet figures, heartbeat ages); one that
    fails does not fail the scrape (the collectors report what they could not read).
    """

    def __init__(self, registry: CollectorRegistry, *, health: Health | None = None,
                 refresh: list[Refresh] | None = None, stats: StatsSource | None = None,
                 host: str = "0.0.0.0", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.registry = registry
        self.health = health
        self.refresh = refresh or []
        self.stats = stats
        self.host = host
        self.port = port
        self.ssl_context = ssl_context  # HTTPS when set (TIDINGS_SECURITY__HTTP_TLS_*)
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        exposition = make_aiohttp_handler(self.registry)

        async def metrics(request: web.Request) -> web.StreamResponse:
            for refresh in self.refresh:
                await refresh()
            return await exposition(request)

        app.router.add_get("/metrics", metrics)
        if self.health is not None:
            health = self.health

            async def livez(_: web.Request) -> web.Response:
                report = await health.liveness()
                return _json(report, report["status"] == "ok")

            async def readyz(_: web.Request) -> web.Response:
                report = await health.readiness()
                return _json(report, report["status"] == "ok")

            app.router.add_get("/livez", livez)
            app.router.add_get("/readyz", readyz)
        if self.stats is not None:
            source = self.stats

            async def stats(_: web.Request) -> web.Response:
                return _json(await source())

            app.router.add_get("/stats", stats)
        return app

    async def start(self) -> int:
        """Start serving; returns the bound port."""
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True,
                           ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError("TIDINGS_METRICS_PORT", f"cannot listen on {self.host}:"
                              f"{self.port}: {exc.strerror or exc}") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> ObservabilityServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
