"""A real Prometheus server scrapes a real ``tidings worker --metrics-port`` process.

Prometheus (Debian's package; .ci/run installs it) runs on a free port with a temporary
config and data directory, scrapes the worker every second, and the test reads a
metric's value back through its HTTP API. Both processes are stopped by PID.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import with_app
from fault_helpers import ROOT, TIDINGS_BIN
from obs_helpers import MISSING_PROMETHEUS, PROMETHEUS, get
from servers import free_port, stop_process
from tidings import Tidings

MESSAGES = 25


@pytest.fixture
def worker_port(cli_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    """A ``tidings worker`` process of tests.apps.cli_app serving metrics on a free port,
    after MESSAGES messages were published for it."""
    async def publish(app: Tidings) -> None:
        await app.get_queue("email").publish_many(list(range(MESSAGES)))

    with_app(cli_env, publish, "email")
    port = free_port()
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(TIDINGS_BIN), "worker", "tests.apps.cli_app:app", "--metrics-port", str(port)],
        cwd=ROOT, env={**os.environ, **cli_env, "TIDINGS_METRICS_HOST": "127.0.0.1"},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        yield port
    finally:
        stop_process(proc, timeout=30)
        log.close()


@pytest.fixture
def prometheus(worker_port: int, tmp_path: Path) -> Iterator[int]:
    """A Prometheus server scraping the worker every second; yields its port."""
    assert PROMETHEUS is not None, MISSING_PROMETHEUS
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: tidings\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker_port}']\n")
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        yield port
    finally:
        stop_process(proc, timeout=30)
        log.close()


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until /-/ready answers 200: before that the query API answers 503 as plain text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"Prometheus was not ready in {timeout}s")


async def query(port: int, expr: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/api/v1/query",
                                    params={"query": expr})
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def eventually(prom: int, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Query until the result is not empty (Prometheus needs a scrape or two first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await query(prom, expr)
        except httpx.TransportError:  # still starting
            result = []
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus returned nothing for {expr!r} in {timeout}s")
        await asyncio.sleep(0.25)


async def test_prometheus_scrapes_the_worker_and_answers_a_query(
        worker_port: int, prometheus: int) -> None:
    acked = f'sum(tidings_messages_acked_total{{queue="email"}}) == {MESSAGES}'
    (sample,) = await eventually(prometheus, acked)
    assert float(sample["value"][1]) == MESSAGES
    (up,) = await eventually(prometheus, 'up{job="tidings"}')
    assert up["value"][1] == "1"
    (fleet,) = await eventually(prometheus, "tidings_fleet_up")
    assert fleet["value"][1] == "1"
    depth = await eventually(prometheus, 'tidings_queue_depth_messages{queue="email"}')
    assert {d["metric"]["lane"] for d in depth} == {"high", "normal", "low"}
    assert (await get(worker_port, "/readyz")).status_code == 200
