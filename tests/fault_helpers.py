"""Real worker processes for fault-injection tests, and what their handlers recorded.

Workers run as separate OS processes (``tidings worker tests.apps.fault_app:app``) that
record what their handler did in Redis under the test's key prefix, so a test can count
at-least-once processing across processes that it kills with SIGKILL, stops with SIGTERM,
or that kill themselves (``os._exit``). Loaded as a pytest plugin by conftest.py, so its
fixtures (``workers``, ``fault_app``, ``report``) are available to every test module.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings import Queue, Tidings
from tidings.queues.queue import GROUP

ROOT = Path(__file__).resolve().parents[1]
TIDINGS_BIN = Path(sys.executable).parent / "tidings"
APP_SPEC = "tests.apps.fault_app:app"
QUEUE = "faults"
POLL = 0.02  # seconds between polls of cross-process state


# -- helpers -------------------------------------------------------------------------------


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def poll(check: Callable[[], Awaitable[Any]], timeout: float, what: str,
               detail: Callable[[], str] = lambda: "") -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail()}")
        await asyncio.sleep(POLL)


class Recording:
    """Reads what the fault app's handlers recorded under one key prefix."""

    def __init__(self, app: Tidings) -> None:
        self.app = app
        prefix = app.settings.key_prefix
        self.started_key = f"{prefix}:fault:started"
        self.done_key = f"{prefix}:fault:done"
        self.pids_key = f"{prefix}:fault:pids"

    async def _counts(self, key: str) -> dict[str, int]:
        raw = await self.app.broker.client.hgetall(key)
        return {text(k): int(v) for k, v in raw.items()}

    async def started(self) -> dict[str, int]:
        return await self._counts(self.started_key)

    async def done(self) -> dict[str, int]:
        return await self._counts(self.done_key)

    async def done_count(self) -> int:
        return int(await self.app.broker.client.hlen(self.done_key))

    async def started_count(self) -> int:
        return int(await self.app.broker.client.hlen(self.started_key))

    async def done_by(self, pid: int) -> int:
        return int(await self.app.broker.client.hget(self.pids_key, str(pid)) or 0)


async def is_settled(q: Queue, *, depth: int = 0, in_flight: int = 0, delayed: int = 0,
                     dead: int = 0) -> bool:
    s = await q.stats()
    return (s.depth, s.in_flight, s.delayed, s.dead) == (depth, in_flight, delayed, dead)


class WorkerProcs:
    """Starts worker processes; kills whatever is still running at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def env(self, app: Tidings, redis_url: str | None = None, **knobs: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDINGS_", "FAULT_"))}
        env.update({
            "TIDINGS_REDIS_URL": redis_url or str(app.settings.redis_url),
            "TIDINGS_KEY_PREFIX": app.settings.key_prefix,
            "TIDINGS_LOG_LEVEL": "WARNING",
            "TIDINGS_CONFIG_DIR": str(self.log_dir),  # no stray tidings.toml applies
            "FAULT_QUEUE": QUEUE,
            "PYTHONUNBUFFERED": "1",
        })
        env.update({f"FAULT_{k.upper()}": str(v) for k, v in knobs.items()})
        return env

    def start(self, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(TIDINGS_BIN), "worker", APP_SPEC, *args], cwd=ROOT, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def log(self, proc: subprocess.Popen[bytes], tail: int = 30) -> str:
        lines = self.logs[proc.pid].read_text(errors="replace").splitlines()[-tail:]
        return f"\n--- worker pid {proc.pid} log tail ---\n" + "\n".join(lines)

    def all_logs(self) -> str:
        return "".join(self.log(p, 15) for p in self.procs)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcs]:
    procs = WorkerProcs(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a measurement to the terminal even while output is captured."""

    def emit(line: str) -> None:
        with capsys.disabled():
            print(f"\n[faults] {line}", flush=True)

    return emit


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


async def consumer_of(q: Queue, proc: subprocess.Popen[bytes], timeout: float = 20.0,
                      detail: Callable[[], str] = lambda: "") -> str:
    """Wait until the worker process has registered (its first heartbeat); its name."""
    marker = f":{proc.pid}:"

    async def find() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"worker {proc.pid} exited with {proc.returncode}{detail()}")
        names = await q.app.broker.client.zrange(q.keys[10], 0, -1)
        return next((text(n) for n in names if marker in text(n)), None)

    return str(await poll(find, timeout, f"worker {proc.pid} to register", detail))


async def pending_of(q: Queue, consumer: str) -> int:
    held = 0
    for lane_key in q.keys[:3]:
        summary = await q.app.broker.client.xpending(lane_key, GROUP)
        held += sum(int(c["pending"]) for c in summary.get("consumers") or []
                    if text(c["name"]) == consumer)
    return held


@pytest.fixture
async def fault_app(make_app: Callable[..., Tidings]) -> Tidings:
    """The test's own connection, under the test's prefix (dropped at teardown)."""
    app = make_app()
    app.queue(QUEUE)
    return await app.connect()
