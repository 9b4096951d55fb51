"""Health endpoints: /livez and /readyz of a real worker with its server up, with the
server stopped, and during a graceful shutdown; each failing check is named."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

import pytest

from conftest import Recorder
from obs_helpers import get
from servers import private_server
from tidings import EventKind, Message, Tidings
from tidings.core.errors import ConfigError
from tidings.engine.embedded import find_server_binary
from tidings.engine.scripts import LIBRARY
from tidings.observability.health import Health


async def test_live_and_ready_while_the_server_is_up(make_app: Callable[..., Tidings]) -> None:
    app = make_app()
    app.queue("email").handler(_noop)
    endpoints = app.observability.serve(port=0, host="127.0.0.1")
    async with app, app.worker() as worker:
        port = endpoints.port_of(worker)
        live, ready = await get(port, "/livez"), await get(port, "/readyz")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    assert live.json()["checks"]["fetch_loop"]["ok"]
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"shutting_down", "redis", "scripts"}
    assert ready.json()["failing"] == []


async def test_not_ready_but_live_while_the_server_is_stopped() -> None:
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(private_server(find_server_binary()))
        app = Tidings(f"redis://127.0.0.1:{port}/0", key_prefix="health", connect_retries=0,
                      socket_timeout=1)
        app.queue("email").handler(_noop)
        endpoints = app.observability.serve(port=0, host="127.0.0.1")
        async with app, app.worker() as worker:
            http = endpoints.port_of(worker)
            assert (await get(http, "/readyz")).status_code == 200
            stack.close()  # stops the server (by its PID)
            ready, live = await get(http, "/readyz"), await get(http, "/livez")
            worker.stop()
    assert ready.status_code == 503
    body = ready.json()
    assert body["failing"] == ["redis", "scripts"]
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["error"]
    assert body["checks"]["shutting_down"]["ok"]
    assert live.status_code == 200  # restarting the worker would not bring Redis back


async def test_not_ready_from_sigterm_through_the_drain(make_app: Callable[..., Tidings],
                                                        recorder: Recorder) -> None:
    app = make_app(middleware=[recorder])
    release = asyncio.Event()
    email = app.queue("email")

    @email.handler
    async def slow(msg: Message) -> None:
        await release.wait()

    endpoints = app.observability.serve(port=0, host="127.0.0.1")
    async with app:
        await email.publish("x")
        worker = app.worker(shutdown_grace=30)
        task = asyncio.create_task(worker.run())
        await worker.started()
        await recorder.wait_count(EventKind.DELIVERED, 1)
        port = endpoints.port_of(worker)
        assert (await get(port, "/readyz")).status_code == 200
        worker.stop()  # what SIGTERM does: the handler is still running, the drain waits
        during = await get(port, "/readyz")
        live = await get(port, "/livez")
        release.set()
        await task
    assert during.status_code == 503
    assert during.json()["failing"] == ["shutting_down"]
    assert live.status_code == 200
    assert recorder.counts[EventKind.ACKED] == 1  # the drain finished the handler


class _Stalled:
    """A worker view whose fetch loop has not gone round for two minutes."""

    consumer = "stalled"
    stopping = False
    stopped = asyncio.Event()
    running = 0
    queue_names = ["email"]

    def fetch_loop_age(self) -> float | None:
        return 120.0


async def test_a_stalled_fetch_loop_fails_liveness_by_name(
        make_app: Callable[..., Tidings]) -> None:
    health = Health(make_app(), _Stalled(), deadline=60)
    report = await health.liveness()
    assert report["status"] == "fail"
    assert report["failing"] == ["fetch_loop"]
    assert report["checks"]["fetch_loop"] == {"ok": False, "age_seconds": 120.0,
                                              "deadline_seconds": 60}


async def test_readiness_reloads_scripts_a_restarted_server_lost(
        make_app: Callable[..., Tidings]) -> None:
    with private_server(find_server_binary()) as port:
        app = Tidings(f"redis://127.0.0.1:{port}/0", key_prefix="health")
        async with app:
            await app.broker.client.script_flush()
            report = await Health(app, None).readiness()
            loaded = await app.broker.client.script_exists(*[s.sha for s in LIBRARY])
    assert report["status"] == "ok"
    assert report["checks"]["scripts"]["reloaded"] == len(loaded) and all(loaded)


async def _noop(msg: Message) -> None:
    return None


async def test_a_metrics_port_in_use_is_a_config_error_naming_it(
        make_app: Callable[..., Tidings]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = make_app()
        app.queue("email").handler(_noop)
        app.observability.serve(port=taken.getsockname()[1], host="127.0.0.1")
        async with app:
            with pytest.raises(ConfigError, match="TIDINGS_METRICS_PORT: cannot listen on"):
                await app.worker().run()
