"""What a worker serves: the HTTP endpoints, for as long as it runs, drain included.

:class:`WorkerEndpoints` is a middleware: ``on_worker_start`` starts the server (so
``/readyz`` can turn false at SIGTERM and stay reachable through the drain),
``worker_loop`` takes part in the election of the fleet reporter and keeps this worker's
heartbeat ages current, ``on_worker_stop`` gives up the lease and stops the server.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.middleware import Middleware, WorkerView
from ..engine.tls import http_ssl_context
from ..queues.host import ExtensionHost
from .fleet import BreakerSource, FleetCollector, ReporterLease
from .health import Health
from .metrics import ProcessMetrics
from .server import ObservabilityServer

log = logging.getLogger("tidings.observability")


class WorkerEndpoints(Middleware):
    """Serves ``/metrics``, ``/livez``, ``/readyz`` and ``/stats`` from each worker."""

    def __init__(self, app: ExtensionHost, metrics: ProcessMetrics, *, port: int,
                 host: str = "0.0.0.0", fleet: bool = True, deadline: float = 60.0,
                 breakers: BreakerSource | None = None, lease_ttl: float = 15.0) -> None:
        self.app = app
        self.metrics = metrics
        self.port = port
        self.host = host
        self.fleet = fleet
        self.deadline = deadline
        self.breakers = breakers
        self.lease_ttl = lease_ttl
        self.servers: dict[str, ObservabilityServer] = {}  # consumer -> its server
        self.collectors: dict[str, FleetCollector] = {}

    async def on_worker_start(self, worker: WorkerView) -> None:
        collector = FleetCollector(self.app, self.breakers)
        collector.active = False  # until this worker wins the election
        if self.fleet:
            self.metrics.registry.register(collector)
            self.collectors[worker.consumer] = collector

        async def stats() -> dict[str, Any]:
            await collector.refresh()
            return {"reporter": collector.active, "error": collector.error,
                    **(collector.snapshot.as_dict() if collector.snapshot else {})}

        server = ObservabilityServer(
            self.metrics.registry, health=Health(self.app, worker, deadline=self.deadline),
            refresh=[lambda: self.metrics.refresh_heartbeats(self.app), collector.refresh],
            stats=stats if self.fleet else None, host=self.host, port=self.port,
            ssl_context=http_ssl_context(self.app.settings.security))
        port = await server.start()
        self.servers[worker.consumer] = server
        log.info("worker %s serves /metrics, /livez, /readyz on %s:%d", worker.consumer,
                 self.host, port)

    async def worker_loop(self, worker: WorkerView) -> None:
        collector = self.collectors.get(worker.consumer)
        if collector is None:
            return
        lease = ReporterLease(self.app, worker.consumer, self.lease_ttl)
        while not worker.stopping:
            try:
                collector.active = await lease.claim()
            except Exception as exc:  # the server is away: the next round tries again
                collector.active = False
                log.debug("fleet reporter election failed: %s", exc)
            collector.decided.set()
            await self.app.clock.sleep(self.lease_ttl / 3)

    async def on_worker_stop(self, worker: WorkerView) -> None:
        collector = self.collectors.pop(worker.consumer, None)
        if collector is not None:
            self.metrics.registry.unregister(collector)
            if collector.active:
                try:
                    await ReporterLease(self.app, worker.consumer, self.lease_ttl).release()
                except Exception as exc:
                    log.warning("could not give up the fleet reporter lease: %s", exc)
        server = self.servers.pop(worker.consumer, None)
        if server is not None:
            await server.stop()

    def port_of(self, worker: WorkerView) -> int:
        """The port ``worker`` serves on (useful with port 0: any free port)."""
        return self.servers[worker.consumer].port
