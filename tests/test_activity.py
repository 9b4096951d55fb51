"""The worker's INFO activity line: processed, failed and in flight every few seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import orjson

from conftest import Recorder
from flow_helpers import ROOT, wait_until
from tidings import EventKind, Message, Retry, Tidings
from tidings.observability.activity import ActivityCounter, ActivityLog


class Lines:
    """A stand-in for the structlog logger: keeps what was logged at INFO."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})

    def total(self, field: str) -> int:
        return sum(int(line[field]) for line in self.lines)


async def test_the_worker_logs_what_it_processed_and_what_failed(app: Tidings,
                                                                recorder: Recorder) -> None:
    email = app.queue("email", backoff_base=0.01, backoff_cap=0.02)
    tried: set[int] = set()

    @email.handler
    async def send(msg: Message) -> None:
        if msg.payload == 0 and 0 not in tried:
            tried.add(0)
            raise Retry(0.01)

    counter, lines = ActivityCounter(), Lines()
    app.add_middleware(counter)
    app.add_worker_service(ActivityLog(counter, every=0.05, logger=lines))
    await email.publish_many(range(5))
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 5)
        await wait_until(lambda: lines.total("processed") == 5)
    assert lines.total("failed") == 1
    assert {line["event"] for line in lines.lines} == {"activity"}
    assert all(line["in_flight"] >= 0 and line["worker"] for line in lines.lines)


async def test_an_idle_worker_logs_nothing(app: Tidings) -> None:
    email = app.queue("email")
    email.handler(lambda msg: None)
    counter, lines = ActivityCounter(), Lines()
    app.add_middleware(counter)
    service = ActivityLog(counter, every=0.01, logger=lines)
    app.add_worker_service(service)
    async with app.worker() as worker:
        for _ in range(5):  # five intervals' worth of lines, had anything happened
            service.emit(worker)
    assert lines.lines == []


async def test_tidings_worker_logs_activity_at_info(app: Tidings, redis_url: str) -> None:
    await app.queue("email").publish_many(range(3))
    env = {**os.environ, "TIDINGS_REDIS_URL": redis_url, "TIDINGS_LOG_LEVEL": "INFO",
           "TIDINGS_KEY_PREFIX": app.settings.key_prefix, "TIDINGS_LOG_JSON": "true"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidings", "worker", "tests.apps.cli_app:app",
        "--summary-every", "0.2", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    processed = 0
    try:
        while processed < 3:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, "the worker exited"
            record = orjson.loads(line)
            if record.get("event") == "activity":
                assert record["level"] == "info"
                processed += record["processed"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    assert proc.returncode == 0
