"""Helpers shared by the flow-control tests: a fake clock, polling, worker subprocesses,
and child processes that compete through one Redis server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    """An injectable clock for circuit breakers: tests move it instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` (state owned by other tasks or processes) until true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def start_worker(app_spec: str, env: dict[str, str], *args: str,
                 command: tuple[str, ...] = ("worker",)) -> subprocess.Popen[bytes]:
    """``tidings worker APP_SPEC`` (or another ``command``) as a real process, in its own
    process group.

    Its log goes to a file named by ``FLOW_TEST_LOG_DIR`` if set (for debugging), else away:
    a pipe nobody reads would fill up and stall the worker.
    """
    full_env = {**os.environ, "TIDINGS_LOG_LEVEL": "WARNING", **env,
                "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    log_dir = os.environ.get("FLOW_TEST_LOG_DIR")
    stderr = (open(Path(log_dir) / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
              if log_dir else subprocess.DEVNULL)
    return subprocess.Popen(
        [sys.executable, "-c", "from tidings.cli import main; main()", *command, app_spec,
         *args],
        cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=stderr,
        start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes], kill: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def workers(app_spec: str, env: dict[str, str], count: int, *args: str
            ) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(app_spec, env, *args) for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop_worker(proc)


# -- child processes running a Python snippet ----------------------------------------------
#
# A child connects, prints a line starting with "ready", waits for a line on stdin, does its
# work, and prints one JSON document as its last output.


async def start_child(source: str, *args: str) -> asyncio.subprocess.Process:
    """``python -c source args...`` with stdin, stdout and stderr piped."""
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", source, *args, stdin=pipe, stdout=pipe, stderr=pipe
    )


async def child_ready(proc: asyncio.subprocess.Process) -> bytes:
    """The child's "ready" line, once it printed it."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert line.startswith(b"ready"), (line, await proc.wait())
    return line


async def kill_children(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def race_children(procs: list[asyncio.subprocess.Process]) -> list[Any]:
    """Start the children's work at once; returns the JSON result of each (in order)."""
    try:
        await asyncio.gather(*map(child_ready, procs))
        # All are connected before any starts, so they compete for the whole run.
        outputs = await asyncio.gather(*(proc.communicate(b"go\n") for proc in procs))
    finally:
        await kill_children(procs)
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    return results
